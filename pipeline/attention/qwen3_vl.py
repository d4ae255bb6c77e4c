"""Qwen3-VL as a VLM family: what differs from Qwen2.5-VL (`qwen_family`, `placement_qwen`, `smoke_qwen`).

Checkpoints: dense Qwen/Qwen3-VL-2B/4B/8B/32B-Instruct (model_type `qwen3_vl`,
`Qwen3VLForConditionalGeneration`) and the MoE Qwen/Qwen3-VL-30B-A3B-Instruct (`qwen3_vl_moe`,
`Qwen3VLMoeForConditionalGeneration`, same processor, vision tower, DeepStack and M-RoPE). Facts of
the hub files (copies in tests/data/qwen3_vl/, sources in the README there) and of transformers
5.24 (`models/qwen3_vl/modeling_qwen3_vl.py`):

- Tokens: the Qwen2 byte-level BPE with Qwen3's 26 added tokens at 151643..151668 (Qwen2.5-VL's 22,
  then `<tool_response>`, `</tool_response>`, `<think>`, `</think>`); the image run is
  `<|image_pad|>` (151655) between `<|vision_start|>` / `<|vision_end|>`, as before.
- Chat template: the Instruct checkpoints' own; unlike Qwen2.5-VL's it adds no default system
  message (a prompt starts `<|im_start|>user\\n`).
- Geometry: 16-px patches, temporal patch 2, 2x2 merge, so one image token covers 32x32 px of the
  image as resized by the same `smart_resize` (factor 32) of `Qwen2VLImageProcessor[Pil]` with
  mean = std = 0.5. The tower has no window attention: token i is the cell (i // (W/32), i % (W/32))
  of the resized image, as `placement_qwen` places it.
- Pixel budget: grounding gets as many tokens as with Qwen2.5-VL's default, 1,024 to 1,280
  (llama.cpp PR 17020: grounding needs about 1,024), i.e. 1024*32*32 .. 1280*32*32 px. The
  checkpoints' own preprocessor allows 64..16,384 tokens.
- DeepStack: the tower's hidden states after its blocks `vision_config.deepstack_visual_indexes`
  ([5, 11, 17] of 24 in the 2B and 4B configs) each pass their own merger and are ADDED to the
  image-token hidden states after decoder layers 0 .. n-1, n = len(deepstack_visual_indexes)
  (`Qwen3VLTextModel.forward`: `layer_idx in range(len(deepstack_visual_embeds))`). So the
  attention of layers 1 .. n reads image keys that carry them (`deepstack_attention_layers`).
- Default layers: no study of Qwen3-VL's attention as a localisation signal was found; its language
  model is a Qwen LM of the same depths (28 / 36 layers), so it takes the Qwen2-based families'
  depths 0.5 (DecAF's middle layer) and 0.79 (ViCrop's layer 22 of 28). On every checkpoint they
  name layers far above the DeepStack layers (28 layers: 14, 22; 36: 18, 28; tested on the hub
  configs), so the maps read attention after the visual features have been injected, as they are
  for Qwen2.5-VL.
- Positions: interleaved M-RoPE (`rope_scaling.mrope_interleaved`, mrope_section [24, 20, 20]) is
  built by the model from `image_grid_thw` and `mm_token_type_ids`; prefix reuse keeps the model's
  `rope_deltas` per prefix as for Qwen2-VL (prefix_reuse.py).
- Processor: transformers has no Qwen3-VL image processor of its own; the checkpoints name
  `Qwen2VLImageProcessor`, whose PIL backend `Qwen2VLImageProcessorPil` runs without torchvision.
  `Qwen3VLProcessor` requires a video processor and the only one (`Qwen3VLVideoProcessor`) needs
  torchvision, so the processor is the real class without its video part (as for Qwen2.5-VL).
"""

from __future__ import annotations

from functools import lru_cache

FAMILY = "qwen3_vl"

MODEL_CLASSES = {"qwen3_vl": "Qwen3VLForConditionalGeneration", "qwen3_vl_moe": "Qwen3VLMoeForConditionalGeneration"}
"""model_type of a checkpoint's config -> transformers model class; both are this family."""

CHECKPOINTS = (
    "Qwen/Qwen3-VL-2B-Instruct", "Qwen/Qwen3-VL-4B-Instruct", "Qwen/Qwen3-VL-8B-Instruct",
    "Qwen/Qwen3-VL-32B-Instruct", "Qwen/Qwen3-VL-30B-A3B-Instruct",
)
"""The supported hub checkpoints (listed by `vlmsam weights`)."""
DEFAULT_CHECKPOINT = "Qwen/Qwen3-VL-8B-Instruct"

SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
    "<tool_response>", "</tool_response>", "<think>", "</think>",
)
"""Added tokens in id order, real ids 151643..151668 (right after the Qwen2 BPE's 151643 entries);
the first 14 are special, the tool-call, FIM and think tokens are not."""
N_SPECIAL = 14

PATCH_SIZE = 16
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
TOKEN_PIXELS = PATCH_SIZE * MERGE_SIZE
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)

DEFAULT_MIN_PIXELS = 1024 * TOKEN_PIXELS**2
"""Default lower pixel budget: 1,024 image tokens of 32x32 px (Qwen2.5-VL's default token count)."""
DEFAULT_MAX_PIXELS = 1280 * TOKEN_PIXELS**2
"""Default upper pixel budget: 1,280 tokens of 32x32 px."""

LAYER_DEPTHS = (0.5, 0.79)
"""Default layers as depth fractions (see the module docstring for the sources)."""

CHAT_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\\n\\n' }}
    {%- endif %}
    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\\n' }}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- set image_count = namespace(value=0) %}
{%- set video_count = namespace(value=0) %}
{%- for message in messages %}
    {%- if message.role == "user" %}
        {{- '<|im_start|>' + message.role + '\\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role + '\\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content_item in message.content %}
                {%- if 'text' in content_item %}
                    {{- content_item.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and message.content) or (not loop.first) %}
                    {{- '\\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""
"""The chat template of Qwen/Qwen3-VL-{2B,4B,8B,32B,30B-A3B}-Instruct (`chat_template.json`)."""


def deepstack_attention_layers(config) -> range:
    """Decoder layers whose attention reads image keys with DeepStack features added (1 .. n)."""
    n = len(config.vision_config.deepstack_visual_indexes)
    return range(1, n + 1)


def check_pixel_budget(min_pixels: int, max_pixels: int) -> None:
    """A clear error for a budget smart_resize (factor 32) cannot honour."""
    if not (isinstance(min_pixels, int) and isinstance(max_pixels, int)) or min_pixels < TOKEN_PIXELS**2:
        raise ValueError(f"models.vlm.min_pixels must be an integer >= {TOKEN_PIXELS**2} (one "
                         f"{TOKEN_PIXELS}x{TOKEN_PIXELS} token of {FAMILY}), got {min_pixels!r}")
    if max_pixels < min_pixels:
        raise ValueError(f"models.vlm.max_pixels ({max_pixels}) must be >= models.vlm.min_pixels ({min_pixels})")


def image_processor(min_pixels: int = DEFAULT_MIN_PIXELS, max_pixels: int = DEFAULT_MAX_PIXELS):
    """The family's PIL image processor (the checkpoints' settings) with the given pixel budget."""
    from transformers import Qwen2VLImageProcessorPil

    check_pixel_budget(min_pixels, max_pixels)
    return Qwen2VLImageProcessorPil(
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels}, patch_size=PATCH_SIZE,
        temporal_patch_size=TEMPORAL_PATCH_SIZE, merge_size=MERGE_SIZE,
        image_mean=list(IMAGE_MEAN), image_std=list(IMAGE_STD),
    )


def load_image_processor(model_id: str, min_pixels: int, max_pixels: int, **hub_kwargs):
    """A checkpoint's image processor (PIL backend) with the pixel budget replacing its own."""
    from transformers import Qwen2VLImageProcessorPil

    check_pixel_budget(min_pixels, max_pixels)
    return Qwen2VLImageProcessorPil.from_pretrained(
        model_id, size={"shortest_edge": min_pixels, "longest_edge": max_pixels}, **hub_kwargs)


_VISION_TOKENS = {"image": "<|image_pad|>", "video": "<|video_pad|>", "vision_start": "<|vision_start|>",
                  "vision_end": "<|vision_end|>"}


@lru_cache(maxsize=None)
def processor_class():
    """`Qwen3VLProcessor` without its video processor (a subclass, built on first use).

    The real class requires a video processor, and transformers' only one needs torchvision;
    images never use it. The subclass takes the image processor and the tokenizer and is
    otherwise the real class (same image-token expansion, `mm_token_type_ids`, chat template);
    its `from_pretrained` loads a real checkpoint's processor without the video part.
    """
    from transformers import ProcessorMixin, Qwen3VLProcessor

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        for kind, token in _VISION_TOKENS.items():
            token = getattr(tokenizer, f"{kind}_token", None) or token
            setattr(self, f"{kind}_token", token)
            setattr(self, f"{kind}_token_id", tokenizer.convert_tokens_to_ids(token))
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return type("Qwen3VLProcessorImageOnly", (Qwen3VLProcessor,), {"__init__": __init__, "__module__": __name__})


# ---------------------------------------------------------------- smoke model

_SMOKE_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=16, max_position_embeddings=32768)
_SMOKE_MROPE_SECTION = [4, 2, 2]  # temporal, height, width of the 8 rotary pairs of a 16-dim head (real: [24, 20, 20] of 64)
_SMOKE_VISION = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                     num_position_embeddings=16, deepstack_visual_indexes=[0, 1])
_SMOKE_INITIALIZER_RANGE = 0.2
_SMOKE_QK_NORM_GAIN = 3.0
# Qwen3's RMS-normed queries and keys bound q.k by head_dim; with unit norm weights a tiny model's
# attention is near uniform over a thousand image tokens and every image gets the same answer. A
# gain of 3 on both norms (9x the logits) makes attention peaked, so tests discriminate.


def build_smoke_tokenizer():
    """Byte-level BPE trained locally with Qwen3-VL's added tokens (ChatML, no BOS; smoke ids)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from pipeline.attention.smoke_models import _tokenizer_json

    special, plain = SPECIAL_TOKENS[:N_SPECIAL], SPECIAL_TOKENS[N_SPECIAL:]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json(special, None)), eos_token="<|im_end|>",
        pad_token="<|endoftext|>", additional_special_tokens=list(special[1:]),
    )
    tokenizer.add_tokens(list(plain))
    tokenizer.padding_side = "left"
    return tokenizer


def build_smoke_processor(min_pixels: int = DEFAULT_MIN_PIXELS, max_pixels: int = DEFAULT_MAX_PIXELS):
    """The real processor class (image-only) with the smoke tokenizer and the real chat template."""
    return processor_class()(image_processor=image_processor(min_pixels, max_pixels),
                             tokenizer=build_smoke_tokenizer(), chat_template=CHAT_TEMPLATE)


def smoke_config(tokenizer):
    """A tiny `Qwen3VLConfig`: real geometry, interleaved M-RoPE, two DeepStack layers."""
    import transformers as tf

    ids = {f"{kind}_token_id": tokenizer.convert_tokens_to_ids(token) for kind, token in _VISION_TOKENS.items()}
    text = tf.Qwen3VLTextConfig(
        vocab_size=len(tokenizer), initializer_range=_SMOKE_INITIALIZER_RANGE,
        bos_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        rope_parameters={"rope_type": "default", "mrope_section": _SMOKE_MROPE_SECTION, "mrope_interleaved": True,
                         "rope_theta": 5000000.0},
        **_SMOKE_TEXT,
    )
    vision = tf.Qwen3VLVisionConfig(patch_size=PATCH_SIZE, spatial_merge_size=MERGE_SIZE,
                                    temporal_patch_size=TEMPORAL_PATCH_SIZE, initializer_range=_SMOKE_INITIALIZER_RANGE,
                                    **_SMOKE_VISION)
    config = tf.Qwen3VLConfig(text_config=text, vision_config=vision, **ids)
    config.initializer_range = _SMOKE_INITIALIZER_RANGE
    return config


def build_smoke(seed: int = 0, attn_implementation: str = "sdpa", min_pixels: int = DEFAULT_MIN_PIXELS,
                max_pixels: int = DEFAULT_MAX_PIXELS):
    """Tiny random-weight (model, processor) of the real classes; `model.eval()`, float32, deterministic."""
    import torch
    import transformers as tf

    processor = build_smoke_processor(min_pixels, max_pixels)
    tokenizer = processor.tokenizer
    config = smoke_config(tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = tf.Qwen3VLForConditionalGeneration._from_config(
            config, attn_implementation=attn_implementation, dtype=torch.float32)
    for layer in model.model.language_model.layers:
        torch.nn.init.constant_(layer.self_attn.q_norm.weight, _SMOKE_QK_NORM_GAIN)
        torch.nn.init.constant_(layer.self_attn.k_norm.weight, _SMOKE_QK_NORM_GAIN)
    model.eval()
    model.requires_grad_(False)
    model.generation_config.bos_token_id = config.get_text_config().bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, processor
