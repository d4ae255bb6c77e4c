"""Tiny random-weight VLMs of the three real LLaVA architectures, built locally (no downloads).

They are the pipeline's `smoke` profile and the test models of the extract stage: the real
model classes (`LlavaForConditionalGeneration`, `LlavaNextForConditionalGeneration`,
`LlavaOnevisionForConditionalGeneration`) with tiny configs, and the real processor classes
with their PIL image processors, a byte-level BPE tokenizer trained locally with the
`tokenizers` library, and a chat template in each family's real style:

    llava            LLaVA-1.5 (Llama)    "USER: <image>\\n... ASSISTANT:"
    llava_next       LLaVA-NeXT (Mistral) "[INST] <image>\\n... [/INST]"
    llava_onevision  OneVision (Qwen2)    ChatML "<|im_start|>user <image>\\n...<|im_end|>"

The vision geometry is the real one scaled down (vision image_size 84 = 6 x 6 patches of 14
pixels; `image_grid_pinpoints` scaled by the same factor, so anyres tiling really happens for
LLaVA-NeXT and OneVision). The language models use grouped-query attention (2 KV heads for 4
query heads). Weights are drawn from a seeded generator with a larger-than-usual
`initializer_range`, so attention is far from uniform and numerical tests discriminate.
Everything built here has random weights: any output of it is a SMOKE result.
"""

from __future__ import annotations

from functools import lru_cache

from pipeline.attention import qwen3_vl
from pipeline.attention.qwen_family import QWEN_FAMILIES

LLAVA_FAMILIES = ("llava", "llava_next", "llava_onevision")
FAMILIES = LLAVA_FAMILIES + QWEN_FAMILIES + (qwen3_vl.FAMILY,)
"""Every smoke family; the Qwen2-VL / Qwen2.5-VL ones are built in `smoke_qwen`, Qwen3-VL in `qwen3_vl`."""

SMOKE_MODEL_IDS = {family: f"smoke/{family}" for family in FAMILIES}
"""Model ids naming the smoke VLMs (used as `models.vlm` in the smoke profile and in caches)."""

VISION_IMAGE_SIZE = 84
"""Input side (pixels) of the tiny vision towers (the real ones use 336 or 384)."""
VISION_PATCH_SIZE = 14
"""Patch side (pixels) of the tiny vision towers, as in the real CLIP/SigLIP towers."""

_INITIALIZER_RANGE = 0.2  # std of the random weights (real configs: 0.02)
_TEXT_LAYERS = 3
_TEXT_HIDDEN = 64
_TEXT_HEADS = 4
_TEXT_KV_HEADS = 2
_VISION_HIDDEN = 32
_VISION_LAYERS = 2

# Real pinpoints, scaled to the tiny vision size below.
_LLAVA_NEXT_PINPOINTS_336 = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
_ONEVISION_STEPS_384 = [384, 768, 1152, 1536, 1920, 2304]

_IMAGE_TOKEN = "<image>"
_VIDEO_TOKEN = "<video>"

# Words the BPE merges are trained on: prompt phrasing and the category names of the datasets
# (D2SA, COCO(A), KINS). Any other text still tokenises (byte-level alphabet), only into more
# pieces.
_CORPUS_WORDS = """
USER: ASSISTANT: [INST] [/INST] user assistant system
Which objects in the image occlude the ? Answer with a JSON list of object names, or an empty
list [] if nothing occludes it. The object is the one in the box . Describe where the is.
What is hidden behind the object occluded occluding occluder visible amodal mask segment
none no yes a an of in on at to and or is are this that image picture photo region box
left right top bottom behind front partly partially fully covered by under over next
person bicycle car motorcycle airplane bus train truck boat traffic light fire hydrant stop
sign parking meter bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack
umbrella handbag tie suitcase frisbee skis snowboard sports ball kite baseball bat glove
skateboard surfboard tennis racket bottle wine glass cup fork knife spoon bowl banana apple
sandwich orange broccoli carrot hot dog pizza donut cake chair couch potted plant bed dining
table toilet tv laptop mouse remote keyboard cell phone microwave oven toaster sink
refrigerator book clock vase scissors teddy hair drier toothbrush
pedestrian cyclist van tram misc person sitting
avocado bundle kiwi lemon lime onion pepper tomato cucumber zucchini salad cabbage carton
milk juice can jar pack packet cereal box pasta rice bread roll rolls cookies chocolate
bar candy tea coffee water soda beer yogurt cheese butter ham sausage chips crackers
oatmeal salt sugar flour oil vinegar sauce ketchup mustard shampoo soap toothpaste
tissue towels detergent sponge brush foil bag paper plastic clamp pear peach plum grapes
""".split()


def _corpus() -> list[str]:
    words = _CORPUS_WORDS
    lines = [" ".join(words[i:i + 12]) for i in range(0, len(words), 12)]
    # Repeat so that frequent words get whole-word merges; capitalised forms for prompts.
    return lines * 4 + [w.capitalize() for w in words] + [" " + w for w in words] * 3


@lru_cache(maxsize=None)
def _tokenizer_json(special_tokens: tuple[str, ...], bos: str | None) -> str:
    """Train the byte-level BPE once per special-token set; returned as JSON (immutable)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    if bos is not None:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok.to_str()


# Chat templates in each family's real style (images rendered before the text of a message).
_LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' ' }}{% endfor %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
_MISTRAL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] }}{% endfor %}{{ ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ ' ' + content['text'] }}{% endfor %}{{ '</s>' }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
    "{% endif %}{% endfor %}"
)
_CHATML_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ '\n' + content['text'] }}{% endfor %}"
    "{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_smoke_tokenizer(family: str):
    """The family's tokenizer: byte-level BPE trained locally, real special tokens and BOS rule."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    _check_family(family)
    if family == qwen3_vl.FAMILY:
        return qwen3_vl.build_smoke_tokenizer()
    if family in QWEN_FAMILIES:
        from pipeline.attention.smoke_qwen import build_qwen_tokenizer

        return build_qwen_tokenizer(family)
    if family == "llava_onevision":
        specials = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", _IMAGE_TOKEN, _VIDEO_TOKEN)
        tok = Tokenizer.from_str(_tokenizer_json(specials, None))
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
            additional_special_tokens=["<|im_start|>", _IMAGE_TOKEN, _VIDEO_TOKEN],
        )
    else:
        specials = ("<unk>", "<s>", "</s>", _IMAGE_TOKEN, "<pad>")
        tok = Tokenizer.from_str(_tokenizer_json(specials, "<s>"))
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
            pad_token="<pad>", additional_special_tokens=[_IMAGE_TOKEN],
        )
    tokenizer.padding_side = "left"
    return tokenizer


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown VLM family {family!r}; expected one of {FAMILIES}")


def _scaled(pixels: int, real_side: int) -> int:
    return pixels * VISION_IMAGE_SIZE // real_side


def _text_config(config_cls, tokenizer, **extra):
    return config_cls(
        vocab_size=len(tokenizer),
        hidden_size=_TEXT_HIDDEN,
        intermediate_size=2 * _TEXT_HIDDEN,
        num_hidden_layers=_TEXT_LAYERS,
        num_attention_heads=_TEXT_HEADS,
        num_key_value_heads=_TEXT_KV_HEADS,
        max_position_embeddings=4096,
        initializer_range=_INITIALIZER_RANGE,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def _vision_kwargs() -> dict:
    return dict(
        hidden_size=_VISION_HIDDEN,
        intermediate_size=2 * _VISION_HIDDEN,
        num_hidden_layers=_VISION_LAYERS,
        num_attention_heads=2,
        image_size=VISION_IMAGE_SIZE,
        patch_size=VISION_PATCH_SIZE,
        initializer_range=_INITIALIZER_RANGE,
    )


@lru_cache(maxsize=None)
def onevision_image_only_processor_class():
    """`LlavaOnevisionProcessor` without its video processor (a subclass, built on first use).

    The real class requires a video processor, and transformers' only one needs torchvision,
    which is not installable here; for images the video processor is never used. This
    subclass takes only the image processor and the tokenizer and is otherwise the real class
    (same image-token expansion, same chat-template handling). Its `from_pretrained` loads a
    saved OneVision processor (e.g. a real checkpoint's) without the video part.
    """
    from transformers import LlavaOnevisionProcessor, ProcessorMixin

    class LlavaOnevisionImageOnlyProcessor(LlavaOnevisionProcessor):
        def __init__(self, image_processor=None, tokenizer=None, num_image_tokens=None,
                     vision_feature_select_strategy=None, chat_template=None,
                     image_token="<image>", video_token="<video>",
                     vision_aspect_ratio="anyres_max_9", **kwargs):
            self.num_image_tokens = num_image_tokens
            self.vision_feature_select_strategy = vision_feature_select_strategy
            self.image_token = getattr(tokenizer, "image_token", image_token)
            self.video_token = getattr(tokenizer, "video_token", video_token)
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            self.vision_aspect_ratio = vision_aspect_ratio
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return LlavaOnevisionImageOnlyProcessor


def _build_config_and_processor(family: str):
    import transformers as tf

    tokenizer = build_smoke_tokenizer(family)
    image_token_id = tokenizer.convert_tokens_to_ids(_IMAGE_TOKEN)
    side = VISION_IMAGE_SIZE
    n_side = side // VISION_PATCH_SIZE
    if family == "llava":
        config = tf.LlavaConfig(
            vision_config=tf.CLIPVisionConfig(**_vision_kwargs()),
            text_config=_text_config(tf.LlamaConfig, tokenizer),
            image_token_index=image_token_id,
            image_seq_length=n_side * n_side,
            vision_feature_select_strategy="default",
            vision_feature_layer=-2,
        )
        image_processor = tf.LlavaImageProcessorPil(
            size={"shortest_edge": side}, crop_size={"height": side, "width": side}
        )
        processor = tf.LlavaProcessor(
            image_processor=image_processor, tokenizer=tokenizer, patch_size=VISION_PATCH_SIZE,
            vision_feature_select_strategy="default", num_additional_image_tokens=1,
            chat_template=_LLAVA_CHAT_TEMPLATE,
        )
    elif family == "llava_next":
        pinpoints = [[_scaled(h, 336), _scaled(w, 336)] for h, w in _LLAVA_NEXT_PINPOINTS_336]
        config = tf.LlavaNextConfig(
            vision_config=tf.CLIPVisionConfig(**_vision_kwargs()),
            text_config=_text_config(tf.MistralConfig, tokenizer, sliding_window=None),
            image_token_index=image_token_id,
            image_grid_pinpoints=pinpoints,
            image_seq_length=n_side * n_side,
            vision_feature_select_strategy="default",
            vision_feature_layer=-2,
        )
        image_processor = tf.LlavaNextImageProcessorPil(
            size={"shortest_edge": side}, crop_size={"height": side, "width": side},
            image_grid_pinpoints=pinpoints,
        )
        processor = tf.LlavaNextProcessor(
            image_processor=image_processor, tokenizer=tokenizer, patch_size=VISION_PATCH_SIZE,
            vision_feature_select_strategy="default", num_additional_image_tokens=1,
            chat_template=_MISTRAL_CHAT_TEMPLATE,
        )
    else:
        steps = [_scaled(s, 384) for s in _ONEVISION_STEPS_384]
        pinpoints = [[h, w] for h in steps for w in steps]
        vision = tf.SiglipVisionConfig(**_vision_kwargs(), vision_use_head=False)
        config = tf.LlavaOnevisionConfig(
            vision_config=vision,
            text_config=_text_config(tf.Qwen2Config, tokenizer),
            image_token_index=image_token_id,
            video_token_index=tokenizer.convert_tokens_to_ids(_VIDEO_TOKEN),
            image_grid_pinpoints=pinpoints,
            vision_feature_select_strategy="full",
            vision_feature_layer=-1,
            vision_aspect_ratio="anyres_max_9",
        )
        image_processor = tf.LlavaOnevisionImageProcessorPil(
            size={"height": side, "width": side}, image_grid_pinpoints=pinpoints
        )
        processor = onevision_image_only_processor_class()(
            image_processor=image_processor, tokenizer=tokenizer,
            num_image_tokens=n_side * n_side, vision_feature_select_strategy="full",
            vision_aspect_ratio="anyres_max_9", chat_template=_CHATML_CHAT_TEMPLATE,
        )
    config.initializer_range = _INITIALIZER_RANGE
    return config, processor


_MODEL_CLASSES = {
    "llava": "LlavaForConditionalGeneration",
    "llava_next": "LlavaNextForConditionalGeneration",
    "llava_onevision": "LlavaOnevisionForConditionalGeneration",
}


def build_smoke_vlm(family: str, seed: int = 0, attn_implementation: str = "sdpa", **qwen_pixels):
    """Tiny random-weight (model, processor) of the family's real classes; `model.eval()`, float32.

    Deterministic for a seed: the same seed gives bit-identical weights. `attn_implementation`
    is passed to the model (e.g. "eager" for reference attention weights in tests).
    `qwen_pixels`: min_pixels / max_pixels of a Qwen family's processor (default: its budget).
    """
    import torch
    import transformers as tf

    _check_family(family)
    if family in QWEN_FAMILIES or family == qwen3_vl.FAMILY:
        if family == qwen3_vl.FAMILY:
            model, processor = qwen3_vl.build_smoke(seed, attn_implementation, **qwen_pixels)
        else:
            from pipeline.attention.smoke_qwen import build_smoke_qwen

            model, processor = build_smoke_qwen(family, seed, attn_implementation, **qwen_pixels)
        model.config.name_or_path = SMOKE_MODEL_IDS[family]
        return model, processor
    if qwen_pixels:
        raise ValueError(f"{family}: min_pixels / max_pixels apply to the Qwen families only")
    config, processor = _build_config_and_processor(family)
    config._attn_implementation = attn_implementation
    model_cls = getattr(tf, _MODEL_CLASSES[family])
    fork_devices: list = []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        model = model_cls._from_config(config, attn_implementation=attn_implementation,
                                       dtype=torch.float32)
    model.eval()
    model.requires_grad_(False)
    tokenizer = processor.tokenizer
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.config.name_or_path = SMOKE_MODEL_IDS[family]
    return model, processor


def smoke_family(model_id: str) -> str | None:
    """The family of a smoke model id ("smoke/llava_next" -> "llava_next"), None for others."""
    for family, smoke_id in SMOKE_MODEL_IDS.items():
        if model_id == smoke_id:
            return family
    return None
