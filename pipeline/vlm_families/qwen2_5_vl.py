"""Qwen2.5-VL (`qwen2_5_vl`, Qwen/Qwen2.5-VL-3B/7B-Instruct): Qwen2-VL's geometry, tokens and chat
template; its vision tower adds window attention, which permutes the patches inside the tower and
restores their order before the merger, so the placement is Qwen2-VL's.

Smoke model: windows of 56 px (2x2 merged tokens) and one full-attention block, so the window
reordering really happens.
"""

from __future__ import annotations

from pipeline.vlm_families import _smoke
from pipeline.vlm_families.qwen2_vl import Qwen2VL

EXTRA_ADDED_TOKENS = ("<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
                      "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>")
"""The hub tokenizer's added tokens after Qwen2-VL's (ids 151657..151664); the smoke tokenizer
keeps Qwen2-VL's set, the image prompts never use these."""


class Qwen2_5_VL(Qwen2VL):
    name = "qwen2_5_vl"
    model_classes = {"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration"}
    processor_name = "Qwen2_5_VLProcessor"
    default_id = "Qwen/Qwen2.5-VL-7B-Instruct"
    checkpoints = ("Qwen/Qwen2.5-VL-3B-Instruct", default_id)

    def smoke_config(self, tokenizer):
        import transformers as tf

        vision = tf.Qwen2_5_VLVisionConfig(
            depth=_smoke.VISION_LAYERS, hidden_size=_smoke.VISION_HIDDEN, intermediate_size=2 * _smoke.VISION_HIDDEN,
            num_heads=2, out_hidden_size=_smoke.TEXT_HIDDEN, window_size=56, fullatt_block_indexes=[1],
            **self.smoke_geometry())
        return tf.Qwen2_5_VLConfig(text_config=tf.Qwen2_5_VLTextConfig(**self.smoke_text_config(tokenizer)),
                                   vision_config=vision, **self.vision_token_ids(tokenizer))


FAMILY = Qwen2_5_VL()
