"""Qwen2-VL (`qwen2_vl`, Qwen/Qwen2-VL-7B-Instruct): 14-px patches merged 2x2, so one image token
covers 28x28 px of the `smart_resize`d image (`_qwen`), M-RoPE, the hub checkpoints' ChatML
template with its default system message.

Smoke model: the real classes with tiny configs (M-RoPE's `mrope_section` scaled to the 16-dim
heads) and the real special tokens on a locally trained BPE (so their ids differ from the real
151643..).
"""

from __future__ import annotations

from pipeline.vlm_families import _smoke
from pipeline.vlm_families._qwen import QwenFamily

SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)
"""Qwen2-VL's added tokens in id order (real ids 151643..151656, right after the Qwen2 BPE
vocabulary of 151643 entries); all special."""

CHAT_TEMPLATE = (
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

SMOKE_MROPE_SECTION = [2, 3, 3]  # temporal, height, width halves of the 16-dim heads (real: [16, 24, 24] of 128)


class Qwen2VL(QwenFamily):
    name = "qwen2_vl"
    model_classes = {"qwen2_vl": "Qwen2VLForConditionalGeneration"}
    processor_name = "Qwen2VLProcessor"
    default_id = "Qwen/Qwen2-VL-7B-Instruct"
    checkpoints = (default_id,)
    chat_template = CHAT_TEMPLATE
    special_tokens = SPECIAL_TOKENS
    n_special = len(SPECIAL_TOKENS)

    def smoke_text_config(self, tokenizer) -> dict:
        """Keyword arguments of the tiny text config."""
        return dict(
            vocab_size=len(tokenizer), hidden_size=_smoke.TEXT_HIDDEN, intermediate_size=2 * _smoke.TEXT_HIDDEN,
            num_hidden_layers=_smoke.TEXT_LAYERS, num_attention_heads=_smoke.TEXT_HEADS,
            num_key_value_heads=_smoke.TEXT_KV_HEADS, max_position_embeddings=32768,
            initializer_range=_smoke.INITIALIZER_RANGE, bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
            rope_parameters={"rope_type": "default", "mrope_section": SMOKE_MROPE_SECTION, "rope_theta": 1000000.0},
        )

    def smoke_geometry(self) -> dict:
        """The real vision geometry of the tiny tower."""
        return dict(patch_size=self.patch_size, spatial_merge_size=self.merge_size,
                    temporal_patch_size=self.temporal_patch_size, in_channels=3,
                    initializer_range=_smoke.INITIALIZER_RANGE)

    def smoke_config(self, tokenizer):
        import transformers as tf

        vision = tf.Qwen2VLVisionConfig(depth=_smoke.VISION_LAYERS, embed_dim=_smoke.VISION_HIDDEN,
                                        hidden_size=_smoke.TEXT_HIDDEN, mlp_ratio=2, num_heads=2,
                                        **self.smoke_geometry())
        return tf.Qwen2VLConfig(text_config=tf.Qwen2VLTextConfig(**self.smoke_text_config(tokenizer)),
                                vision_config=vision, **self.vision_token_ids(tokenizer))


FAMILY = Qwen2VL()
