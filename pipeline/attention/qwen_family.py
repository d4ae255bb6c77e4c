"""Qwen2-VL / Qwen2.5-VL as VLM families: their tokens, chat template, pixel budget and processor.

Facts of the real checkpoints (Qwen/Qwen2-VL-7B-Instruct, Qwen/Qwen2.5-VL-3B-Instruct,
Qwen/Qwen2.5-VL-7B-Instruct), used by the loader, the placement and the smoke models.
"""

from __future__ import annotations

from functools import lru_cache

QWEN_FAMILIES = ("qwen2_vl", "qwen2_5_vl")

QWEN_CHECKPOINTS = ("Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct", "Qwen/Qwen2-VL-7B-Instruct")
"""The supported hub checkpoints of the two families (listed by `vlmsam weights`)."""

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)
"""Qwen2-VL's added tokens in id order (real ids 151643..151656, right after the Qwen2 BPE
vocabulary of 151643 entries); Qwen2.5-VL appends tool-call and FIM tokens after them."""

QWEN_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""The chat template of Qwen/Qwen2-VL-7B-Instruct and Qwen/Qwen2.5-VL-*-Instruct
(`chat_template.json` of the hub repositories)."""

PATCH_SIZE = 14
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2

DEFAULT_MIN_PIXELS = 1024 * 28 * 28
"""Default lower pixel budget: at least 1,024 image tokens (28x28 px each after the 2x2 merge);
grounding degrades below about 1,024 tokens (llama.cpp PR 17020, see the attention notes)."""
DEFAULT_MAX_PIXELS = 1280 * 28 * 28
"""Default upper pixel budget: 1,280 tokens, transformers' default for the image processor class
(the checkpoints' own preprocessor_config.json allows up to 16,384 tokens)."""


def check_family(family: str) -> None:
    """A clear error for a family that is not Qwen2-VL / Qwen2.5-VL."""
    if family not in QWEN_FAMILIES:
        raise ValueError(f"unknown Qwen VLM family {family!r}; expected one of {QWEN_FAMILIES}")


def qwen_image_processor(min_pixels: int = DEFAULT_MIN_PIXELS, max_pixels: int = DEFAULT_MAX_PIXELS):
    """The PIL image processor of both families with the given pixel budget."""
    from transformers import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(
        size=pixel_budget_size(min_pixels, max_pixels), patch_size=PATCH_SIZE,
        temporal_patch_size=TEMPORAL_PATCH_SIZE, merge_size=MERGE_SIZE,
    )


def load_qwen_image_processor(model_id: str, min_pixels: int, max_pixels: int, **hub_kwargs):
    """A checkpoint's image processor (PIL backend) with the pixel budget replacing its own."""
    from transformers import Qwen2VLImageProcessorPil

    check_pixel_budget(min_pixels, max_pixels)
    return Qwen2VLImageProcessorPil.from_pretrained(model_id, min_pixels=min_pixels, max_pixels=max_pixels,
                                                    **hub_kwargs)


def pixel_budget_size(min_pixels: int, max_pixels: int) -> dict:
    """The image processor's `size` of a pixel budget (transformers' successor of min/max_pixels)."""
    check_pixel_budget(min_pixels, max_pixels)
    return {"shortest_edge": min_pixels, "longest_edge": max_pixels}


def check_pixel_budget(min_pixels: int, max_pixels: int) -> None:
    """A clear error for a budget smart_resize cannot honour."""
    factor = PATCH_SIZE * MERGE_SIZE
    if not (isinstance(min_pixels, int) and isinstance(max_pixels, int)) or min_pixels < factor**2:
        raise ValueError(f"models.vlm.min_pixels must be an integer >= {factor**2} (one {factor}x{factor} "
                         f"token), got {min_pixels!r}")
    if max_pixels < min_pixels:
        raise ValueError(f"models.vlm.max_pixels ({max_pixels}) must be >= models.vlm.min_pixels ({min_pixels})")


@lru_cache(maxsize=None)
def qwen_processor_class(family: str):
    """The family's processor: the real class without its video processor (a subclass).

    The real classes require a video processor, and transformers' only one needs torchvision;
    images never use it. The subclass takes the image processor and the tokenizer and is
    otherwise the real class (same image-token expansion, chat template and token counts);
    its `from_pretrained` loads a real checkpoint's processor without the video part.
    """
    import transformers as tf
    from transformers import ProcessorMixin

    check_family(family)
    base = tf.Qwen2VLProcessor if family == "qwen2_vl" else tf.Qwen2_5_VLProcessor

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", "<|image_pad|>")
        self.video_token = getattr(tokenizer, "video_token", "<|video_pad|>")
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return type(f"{base.__name__}ImageOnly", (base,), {"__init__": __init__, "__module__": __name__})
