"""LLaVA-1.5 (`llava`): one view, the processed image (shortest edge resized to 336, centre crop
336: tokens see only the crop), patches row-major; a CLS kept by the select strategy is a
non-spatial position. Smoke chat template in the real style "USER: <image>\\n... ASSISTANT:".
"""

from __future__ import annotations

from pipeline.attention.cache import VIEW_BASE
from pipeline.vlm_families._geometry import single_view_map
from pipeline.vlm_families._llava import LlavaBase, tower_output
from pipeline.vlm_families._placement import check_same, grid_view
from pipeline.vlm_families.family import LayerDepths

SMOKE_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' ' }}{% endfor %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


class Llava(LlavaBase):
    name = "llava"
    model_classes = {"llava": "LlavaForConditionalGeneration"}
    processor_name = "LlavaProcessor"
    default_id = "llava-hf/llava-1.5-7b-hf"
    checkpoints = (default_id,)
    token_size = "14 x 14 px of the 336-px centre crop"
    layer_depths = LayerDepths((0.31, 0.44), (
        "LLaVA-1.5-7B (32 layers): the localisation heads chosen most often on RefCOCO sit in layers 14 "
        "and 10 (LocalizationHeads); ViCrop reads layer 14. 10/32 = 0.31, 14/32 = 0.44"))

    def place(self, config, processor, image_hw, tokens):
        vision = config.vision_config
        check_same("patch_size", vision.patch_size, getattr(processor, "patch_size", None))
        pm, processed_hw = single_view_map(processor.image_processor, image_hw)
        keep_cls, first_patch = tower_output(vision, config.vision_feature_select_strategy)
        if keep_cls:
            tokens.skip()
        shape = grid_view(tokens, VIEW_BASE, pm, processed_hw, vision.patch_size, image_hw, first_patch)
        return {VIEW_BASE: shape}

    def smoke_config(self, tokenizer):
        return self.clip_smoke_config(tokenizer, ("LlavaConfig", "LlamaConfig", "LlavaImageProcessorPil"),
                                      SMOKE_CHAT_TEMPLATE)


FAMILY = Llava()
