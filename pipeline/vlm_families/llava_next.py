"""LLaVA-NeXT (`llava_next`, LLaVA-v1.6 Mistral-7B): anyres placement (`_anyres`), the Mistral chat
template in its real style "[INST] <image>\\n... [/INST]" for the smoke model."""

from __future__ import annotations

from pipeline.vlm_families._anyres import AnyresFamily
from pipeline.vlm_families._llava import scaled
from pipeline.vlm_families.family import LayerDepths
from pipeline.vlm_families.llava import FAMILY as LLAVA

_PINPOINTS_336 = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]  # the real ones
SMOKE_CHAT_TEMPLATE = (
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


class LlavaNext(AnyresFamily):
    name = "llava_next"
    model_classes = {"llava_next": "LlavaNextForConditionalGeneration"}
    processor_name = "LlavaNextProcessor"
    default_id = "llava-hf/llava-v1.6-mistral-7b-hf"
    checkpoints = (default_id,)
    layer_depths = LayerDepths(LLAVA.layer_depths.fractions, (
        "no layer study was found for LLaVA-NeXT (Mistral-7B, 32 layers); it shares LLaVA-1.5's recipe "
        "and a 32-layer 7B language model, so it takes LLaVA-1.5's depths"))

    def smoke_config(self, tokenizer):
        pinpoints = [[scaled(h, 336), scaled(w, 336)] for h, w in _PINPOINTS_336]
        return self.clip_smoke_config(tokenizer, ("LlavaNextConfig", "MistralConfig", "LlavaNextImageProcessorPil"),
                                      SMOKE_CHAT_TEMPLATE, pinpoints, sliding_window=None)


FAMILY = LlavaNext()
