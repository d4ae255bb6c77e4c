"""Qwen3-VL (`qwen3_vl`): what differs from the other Qwen-VL families (`_qwen`).

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
  of the resized image, as `_qwen` places it.
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
  `rope_deltas` per prefix as for Qwen2-VL (`_qwen.QwenFamily.rope_state`).
- Processor: transformers has no Qwen3-VL image processor of its own; the checkpoints name
  `Qwen2VLImageProcessor`, whose PIL backend `Qwen2VLImageProcessorPil` runs without torchvision.
  `Qwen3VLProcessor` requires a video processor and the only one (`Qwen3VLVideoProcessor`) needs
  torchvision, so the processor is the real class without its video part (as for Qwen2.5-VL).
"""

from __future__ import annotations

from pipeline.vlm_families import _smoke
from pipeline.vlm_families._qwen import QWEN_LM_DEPTHS, QwenFamily
from pipeline.vlm_families.family import LayerDepths
from pipeline.vlm_families.qwen2_5_vl import EXTRA_ADDED_TOKENS
from pipeline.vlm_families.qwen2_vl import SPECIAL_TOKENS as QWEN2_VL_TOKENS

SPECIAL_TOKENS = QWEN2_VL_TOKENS + EXTRA_ADDED_TOKENS + ("<tool_response>", "</tool_response>", "<think>", "</think>")
"""Added tokens in id order, real ids 151643..151668 (right after the Qwen2 BPE's 151643 entries):
Qwen2.5-VL's 22, then four; the first 14 are special, the tool-call, FIM and think tokens are not."""
N_SPECIAL = len(QWEN2_VL_TOKENS)

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


_SMOKE_TEXT = dict(hidden_size=_smoke.TEXT_HIDDEN, intermediate_size=2 * _smoke.TEXT_HIDDEN,
                   num_hidden_layers=_smoke.TEXT_LAYERS, num_attention_heads=_smoke.TEXT_HEADS,
                   num_key_value_heads=_smoke.TEXT_KV_HEADS, head_dim=16, max_position_embeddings=32768)
_SMOKE_MROPE_SECTION = [4, 2, 2]  # temporal, height, width of the 8 rotary pairs of a 16-dim head (real: [24, 20, 20] of 64)
_SMOKE_VISION = dict(depth=_smoke.VISION_LAYERS, hidden_size=_smoke.VISION_HIDDEN,
                     intermediate_size=2 * _smoke.VISION_HIDDEN, num_heads=2, out_hidden_size=_smoke.TEXT_HIDDEN,
                     num_position_embeddings=16, deepstack_visual_indexes=[0, 1])
_SMOKE_QK_NORM_GAIN = 3.0
# Qwen3's RMS-normed queries and keys bound q.k by head_dim; with unit norm weights a tiny model's
# attention is near uniform over a thousand image tokens and every image gets the same answer. A
# gain of 3 on both norms (9x the logits) makes attention peaked, so tests discriminate.


class Qwen3VL(QwenFamily):
    name = "qwen3_vl"
    model_classes = {"qwen3_vl": "Qwen3VLForConditionalGeneration", "qwen3_vl_moe": "Qwen3VLMoeForConditionalGeneration"}
    processor_name = "Qwen3VLProcessor"
    default_id = "Qwen/Qwen3-VL-8B-Instruct"
    checkpoints = ("Qwen/Qwen3-VL-2B-Instruct", "Qwen/Qwen3-VL-4B-Instruct", default_id,
                   "Qwen/Qwen3-VL-32B-Instruct", "Qwen/Qwen3-VL-30B-A3B-Instruct")
    patch_size = 16
    image_mean = (0.5, 0.5, 0.5)
    image_std = (0.5, 0.5, 0.5)
    chat_template = CHAT_TEMPLATE
    special_tokens = SPECIAL_TOKENS
    n_special = N_SPECIAL
    vision_tokens = ("image", "video", "vision_start", "vision_end")
    layer_depths = LayerDepths(QWEN_LM_DEPTHS.fractions, (
        "no study of Qwen3-VL's attention as a localisation signal was found; its language model is a Qwen "
        "LM of the same depths (28 / 36 layers), so it takes the Qwen2-based families' depths (DecAF's middle "
        "layer, ViCrop's layer 22 of 28), far above the DeepStack layers 1..3 on every checkpoint"))

    def smoke_config(self, tokenizer):
        """A tiny `Qwen3VLConfig`: real geometry, interleaved M-RoPE, two DeepStack layers."""
        import transformers as tf

        text = tf.Qwen3VLTextConfig(
            vocab_size=len(tokenizer), initializer_range=_smoke.INITIALIZER_RANGE,
            bos_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            rope_parameters={"rope_type": "default", "mrope_section": _SMOKE_MROPE_SECTION, "mrope_interleaved": True,
                             "rope_theta": 5000000.0},
            **_SMOKE_TEXT,
        )
        vision = tf.Qwen3VLVisionConfig(patch_size=self.patch_size, spatial_merge_size=self.merge_size,
                                        temporal_patch_size=self.temporal_patch_size,
                                        initializer_range=_smoke.INITIALIZER_RANGE, **_SMOKE_VISION)
        return tf.Qwen3VLConfig(text_config=text, vision_config=vision, **self.vision_token_ids(tokenizer))

    def build_smoke(self, seed, attn_implementation, min_pixels=None, max_pixels=None):
        import torch

        model, processor = super().build_smoke(seed, attn_implementation, min_pixels, max_pixels)
        for layer in model.model.language_model.layers:
            torch.nn.init.constant_(layer.self_attn.q_norm.weight, _SMOKE_QK_NORM_GAIN)
            torch.nn.init.constant_(layer.self_attn.k_norm.weight, _SMOKE_QK_NORM_GAIN)
        return model, processor


FAMILY = Qwen3VL()
