"""Real processor classes without their video processor.

The processors of LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL and Qwen3-VL require a video processor,
and transformers' only ones need torchvision, which the project does not install; images never
use them. `image_only_processor_class` subclasses the real class with an `__init__` that takes
the image processor and the tokenizer only and sets what the real `__init__` sets besides; the
class is otherwise the real one (same image-token expansion, chat template and token counts),
and its `from_pretrained` loads a real checkpoint's processor without the video part.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=None)
def image_only_processor_class(base_name: str, tokens: tuple[tuple[str, str], ...]):
    """The subclass of transformers' `base_name` (built once).

    tokens    (kind, default token): sets `<kind>_token` (the tokenizer's own when it has one,
              else the processor config's, else the default) and `<kind>_token_id`

    A real class whose `__init__` stores further processor-config values subclasses this one with
    an `__init__` naming them (transformers passes a saved config only the keys it names).
    """
    import transformers as tf
    from transformers import ProcessorMixin

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        for kind, default in tokens:
            token = getattr(tokenizer, f"{kind}_token", None) or kwargs.get(f"{kind}_token") or default
            setattr(self, f"{kind}_token", token)
            setattr(self, f"{kind}_token_id", tokenizer.convert_tokens_to_ids(token))
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    base = getattr(tf, base_name)
    return type(f"{base_name}ImageOnly", (base,), {"__init__": __init__, "__module__": __name__})
