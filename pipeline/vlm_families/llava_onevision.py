"""LLaVA-OneVision (`llava_onevision`, Qwen2 language model, SigLIP tower): LLaVA-NeXT's anyres
placement with the unpadded grid bilinearly downsampled when it exceeds `anyres_max_N` tiles; the
real processor without its video part; the ChatML template "<|im_start|>user <image>\\n...<|im_end|>"
for the smoke model.
"""

from __future__ import annotations

from functools import lru_cache

from pipeline.vlm_families import _smoke
from pipeline.vlm_families._anyres import max_num_tiles
from pipeline.vlm_families._image_only import image_only_processor_class
from pipeline.vlm_families._llava import (
    IMAGE_TOKEN, VIDEO_TOKEN, VISION_IMAGE_SIZE, VISION_PATCH_SIZE, scaled, text_config, vision_kwargs,
)
from pipeline.vlm_families._placement import check_same
from pipeline.vlm_families._qwen import QWEN_LM_DEPTHS
from pipeline.vlm_families.llava_next import LlavaNext

_STEPS_384 = [384, 768, 1152, 1536, 1920, 2304]  # the real pinpoints are all pairs of these
SMOKE_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ '\n' + content['text'] }}{% endfor %}"
    "{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@lru_cache(maxsize=None)
def _processor_class():
    base = image_only_processor_class("LlavaOnevisionProcessor", (("image", IMAGE_TOKEN), ("video", VIDEO_TOKEN)))

    class LlavaOnevisionProcessorImageOnly(base):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, num_image_tokens=None,
                     vision_feature_select_strategy=None, vision_aspect_ratio="anyres_max_9", **kwargs):
            self.num_image_tokens = num_image_tokens
            self.vision_feature_select_strategy = vision_feature_select_strategy
            self.vision_aspect_ratio = vision_aspect_ratio
            super().__init__(image_processor, tokenizer, chat_template, **kwargs)

    return LlavaOnevisionProcessorImageOnly


class LlavaOnevision(LlavaNext):
    name = "llava_onevision"
    model_classes = {"llava_onevision": "LlavaOnevisionForConditionalGeneration"}
    default_id = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"
    checkpoints = (default_id,)
    token_size = "one 14-px SigLIP patch of the base view or of a 384-px anyres tile (downsampled past 9 tiles)"
    layer_depths = QWEN_LM_DEPTHS  # its language model is Qwen2

    def processor_class(self):
        return _processor_class()

    def max_tiles(self, config, processor):
        grid_side = config.vision_config.image_size // config.vision_config.patch_size
        check_same("vision_aspect_ratio", config.vision_aspect_ratio, getattr(processor, "vision_aspect_ratio", None))
        check_same("tokens per tile", grid_side * grid_side, getattr(processor, "num_image_tokens", None))
        return max_num_tiles(config.vision_aspect_ratio)

    def build_smoke_tokenizer(self):
        """ChatML of the Qwen2 language model, no BOS."""
        return _smoke.smoke_tokenizer(("<|endoftext|>", "<|im_start|>", "<|im_end|>", IMAGE_TOKEN, VIDEO_TOKEN),
                                      eos="<|im_end|>", pad="<|endoftext|>",
                                      additional=("<|im_start|>", IMAGE_TOKEN, VIDEO_TOKEN))

    def smoke_config(self, tokenizer):
        import transformers as tf

        side, n_side = VISION_IMAGE_SIZE, VISION_IMAGE_SIZE // VISION_PATCH_SIZE
        steps = [scaled(s, 384) for s in _STEPS_384]
        pinpoints = [[h, w] for h in steps for w in steps]
        config = tf.LlavaOnevisionConfig(
            vision_config=tf.SiglipVisionConfig(**vision_kwargs(), vision_use_head=False),
            text_config=text_config(tf.Qwen2Config, tokenizer),
            image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
            video_token_index=tokenizer.convert_tokens_to_ids(VIDEO_TOKEN), image_grid_pinpoints=pinpoints,
            vision_feature_select_strategy="full", vision_feature_layer=-1, vision_aspect_ratio="anyres_max_9",
        )
        image_processor = tf.LlavaOnevisionImageProcessorPil(size={"height": side, "width": side},
                                                             image_grid_pinpoints=pinpoints)
        processor = self.processor_class()(
            image_processor=image_processor, tokenizer=tokenizer, num_image_tokens=n_side * n_side,
            vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9",
            chat_template=SMOKE_CHAT_TEMPLATE,
        )
        return config, processor


FAMILY = LlavaOnevision()
