"""Tiny random-weight Qwen2-VL / Qwen2.5-VL models and their processors, built locally.

The real classes (`Qwen2VLForConditionalGeneration`, `Qwen2_5_VLForConditionalGeneration`,
`Qwen2VLProcessor`, `Qwen2_5_VLProcessor` with the PIL `Qwen2VLImageProcessorPil`) with tiny
configs; the real vision geometry (14-px patches, temporal patch 2, 2x2 merge, `smart_resize`
with factor 28 bounded by the pixel budget), M-RoPE in the language model (its `mrope_section`
scaled to the tiny head size), the real chat template and the real special tokens (on a
locally trained byte-level BPE, so their ids differ from the real 151643..).

Qwen2.5-VL's tower uses window attention: the tiny one has windows of 56 px (2x2 merged
tokens) and one full-attention block, so the window reordering really happens.

The processors take no video processor: transformers' only one needs torchvision, which is not
installable here; images never use it. Everything built here has random weights: any output
of it is a SMOKE result.
"""

from __future__ import annotations

from pipeline.attention.qwen_family import (
    DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, MERGE_SIZE, PATCH_SIZE, QWEN_CHAT_TEMPLATE, QWEN_SPECIAL_TOKENS,
    TEMPORAL_PATCH_SIZE, check_family, qwen_image_processor, qwen_processor_class,
)

_TEXT_LAYERS = 3
_TEXT_HIDDEN = 64
_TEXT_HEADS = 4
_TEXT_KV_HEADS = 2
_MROPE_SECTION = [2, 3, 3]  # temporal, height, width halves of the 16-dim heads (real: [16, 24, 24] of 128)
_VISION_HIDDEN = 32
_VISION_LAYERS = 2
_INITIALIZER_RANGE = 0.2


def build_qwen_tokenizer(family: str):
    """Byte-level BPE trained locally with Qwen2-VL's special tokens (ChatML, no BOS)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from pipeline.attention.smoke_models import _tokenizer_json

    check_family(family)
    tok = Tokenizer.from_str(_tokenizer_json(QWEN_SPECIAL_TOKENS, None))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=list(QWEN_SPECIAL_TOKENS[1:]),
    )
    tokenizer.padding_side = "left"
    return tokenizer


def _configs(family: str, tokenizer):
    import transformers as tf

    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    text = dict(
        vocab_size=len(tokenizer), hidden_size=_TEXT_HIDDEN, intermediate_size=2 * _TEXT_HIDDEN,
        num_hidden_layers=_TEXT_LAYERS, num_attention_heads=_TEXT_HEADS,
        num_key_value_heads=_TEXT_KV_HEADS, max_position_embeddings=32768,
        initializer_range=_INITIALIZER_RANGE, bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        rope_parameters={"rope_type": "default", "mrope_section": _MROPE_SECTION, "rope_theta": 1000000.0},
    )
    geometry = dict(patch_size=PATCH_SIZE, spatial_merge_size=MERGE_SIZE,
                    temporal_patch_size=TEMPORAL_PATCH_SIZE, in_channels=3,
                    initializer_range=_INITIALIZER_RANGE)
    if family == "qwen2_vl":
        vision = tf.Qwen2VLVisionConfig(depth=_VISION_LAYERS, embed_dim=_VISION_HIDDEN,
                                        hidden_size=_TEXT_HIDDEN, mlp_ratio=2, num_heads=2, **geometry)
        config = tf.Qwen2VLConfig(text_config=tf.Qwen2VLTextConfig(**text), vision_config=vision, **ids)
    else:
        vision = tf.Qwen2_5_VLVisionConfig(
            depth=_VISION_LAYERS, hidden_size=_VISION_HIDDEN, intermediate_size=2 * _VISION_HIDDEN,
            num_heads=2, out_hidden_size=_TEXT_HIDDEN, window_size=56, fullatt_block_indexes=[1],
            **geometry)
        config = tf.Qwen2_5_VLConfig(text_config=tf.Qwen2_5_VLTextConfig(**text), vision_config=vision, **ids)
    config.initializer_range = _INITIALIZER_RANGE
    return config


def build_qwen_processor(family: str, min_pixels: int = DEFAULT_MIN_PIXELS, max_pixels: int = DEFAULT_MAX_PIXELS):
    """The family's real processor (image processor + tokenizer + chat template, no video part)."""
    return qwen_processor_class(family)(
        image_processor=qwen_image_processor(min_pixels, max_pixels),
        tokenizer=build_qwen_tokenizer(family), chat_template=QWEN_CHAT_TEMPLATE,
    )


def build_smoke_qwen(family: str, seed: int = 0, attn_implementation: str = "sdpa",
                     min_pixels: int = DEFAULT_MIN_PIXELS, max_pixels: int = DEFAULT_MAX_PIXELS):
    """Tiny random-weight (model, processor) of a Qwen family; `model.eval()`, float32, deterministic."""
    import torch
    import transformers as tf

    processor = build_qwen_processor(family, min_pixels, max_pixels)
    tokenizer = processor.tokenizer
    config = _configs(family, tokenizer)
    config._attn_implementation = attn_implementation
    model_cls = tf.Qwen2VLForConditionalGeneration if family == "qwen2_vl" else tf.Qwen2_5_VLForConditionalGeneration
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls._from_config(config, attn_implementation=attn_implementation, dtype=torch.float32)
    model.eval()
    model.requires_grad_(False)
    model.generation_config.bos_token_id = config.get_text_config().bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, processor
