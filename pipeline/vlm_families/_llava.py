"""What the three LLaVA families share: a CLIP / SigLIP tower whose patches are the image tokens,
the PIL processor of the checkpoint, and the tiny smoke configs of the real geometry scaled down.

Smoke geometry: vision image_size 84 = 6 x 6 patches of 14 pixels (the real towers take 336 or
384); `image_grid_pinpoints` are scaled by the same factor, so anyres tiling really happens for
LLaVA-NeXT and OneVision. The language models use grouped-query attention (2 KV heads for 4
query heads).

`vision_feature_select_strategy`: "default" drops the first vision-tower output (the CLS of a
CLIP tower; the first patch of a tower without CLS), "full" keeps it (a kept CLS is an
image-token position with keep = False).
"""

from __future__ import annotations

from pipeline.vlm_families import _smoke
from pipeline.vlm_families._geometry import PlacementError
from pipeline.vlm_families.family import VlmFamily

VISION_IMAGE_SIZE = 84
"""Input side (pixels) of the tiny vision towers (the real ones use 336 or 384)."""
VISION_PATCH_SIZE = 14
"""Patch side (pixels) of the tiny vision towers, as in the real CLIP/SigLIP towers."""
IMAGE_TOKEN = "<image>"
VIDEO_TOKEN = "<video>"

# Vision towers whose output starts with a CLS token (CLIP) or not (SigLIP).
_TOWER_HAS_CLS = {"clip_vision_model": True, "siglip_vision_model": False}


def tower_output(vision_config, strategy: str) -> tuple[bool, int]:
    """(kept CLS?, index of the first kept patch) after the select strategy."""
    tower = vision_config.model_type
    if tower not in _TOWER_HAS_CLS:
        raise PlacementError(f"unsupported vision tower {tower!r} (known: {sorted(_TOWER_HAS_CLS)})")
    if strategy not in ("default", "full"):
        raise PlacementError(f"unknown vision_feature_select_strategy {strategy!r}")
    has_cls = _TOWER_HAS_CLS[tower]
    if strategy == "default":  # drop the first output
        return False, (0 if has_cls else 1)
    return has_cls, 0


def scaled(pixels: int, real_side: int) -> int:
    """A real pixel size scaled to the smoke tower (`real_side` -> VISION_IMAGE_SIZE)."""
    return pixels * VISION_IMAGE_SIZE // real_side


def text_config(config_cls, tokenizer, **extra):
    """The tiny language-model config of class `config_cls`."""
    return config_cls(
        vocab_size=len(tokenizer), hidden_size=_smoke.TEXT_HIDDEN, intermediate_size=2 * _smoke.TEXT_HIDDEN,
        num_hidden_layers=_smoke.TEXT_LAYERS, num_attention_heads=_smoke.TEXT_HEADS,
        num_key_value_heads=_smoke.TEXT_KV_HEADS, max_position_embeddings=4096,
        initializer_range=_smoke.INITIALIZER_RANGE, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **extra,
    )


def vision_kwargs() -> dict:
    """Keyword arguments of the tiny CLIP / SigLIP vision config."""
    return dict(
        hidden_size=_smoke.VISION_HIDDEN, intermediate_size=2 * _smoke.VISION_HIDDEN,
        num_hidden_layers=_smoke.VISION_LAYERS, num_attention_heads=2, image_size=VISION_IMAGE_SIZE,
        patch_size=VISION_PATCH_SIZE, initializer_range=_smoke.INITIALIZER_RANGE,
    )


class LlavaBase(VlmFamily):
    """A LLaVA family: subclasses set `processor_name` and implement `place` and `smoke_config`."""

    processor_name: str = ""
    token_size = "one 14-px vision patch"

    def processor_class(self):
        import transformers as tf

        return getattr(tf, self.processor_name)

    def load_processor(self, model_id, min_pixels=None, max_pixels=None, **hub_kwargs):
        self.budget_kwargs(min_pixels, max_pixels)
        return self.processor_class().from_pretrained(model_id, backend="pil", **hub_kwargs)

    def build_smoke_tokenizer(self):
        """Llama / Mistral style: BOS <s> before every text, SentencePiece-like specials."""
        return _smoke.smoke_tokenizer(("<unk>", "<s>", "</s>", IMAGE_TOKEN, "<pad>"), bos="<s>", eos="</s>",
                                      pad="<pad>", unk="<unk>", additional=(IMAGE_TOKEN,))

    def smoke_config(self, tokenizer):
        """(config, processor) of the tiny model around `tokenizer`."""
        raise NotImplementedError

    def clip_smoke_config(self, tokenizer, classes: tuple[str, str, str], chat_template: str,
                          pinpoints: list | None = None, **text_extra):
        """(config, processor) of a tiny CLIP-tower family (LLaVA-1.5, LLaVA-NeXT): `classes` names the
        model config, text config and image processor classes; `pinpoints` the anyres resolutions."""
        import transformers as tf

        config_cls, text_cls, image_processor_cls = (getattr(tf, name) for name in classes)
        side, n_side = VISION_IMAGE_SIZE, VISION_IMAGE_SIZE // VISION_PATCH_SIZE
        grid = {} if pinpoints is None else {"image_grid_pinpoints": pinpoints}
        config = config_cls(
            vision_config=tf.CLIPVisionConfig(**vision_kwargs()),
            text_config=text_config(text_cls, tokenizer, **text_extra),
            image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), image_seq_length=n_side * n_side,
            vision_feature_select_strategy="default", vision_feature_layer=-2, **grid,
        )
        image_processor = image_processor_cls(size={"shortest_edge": side}, crop_size={"height": side, "width": side},
                                              **grid)
        processor = self.processor_class()(
            image_processor=image_processor, tokenizer=tokenizer, patch_size=VISION_PATCH_SIZE,
            vision_feature_select_strategy="default", num_additional_image_tokens=1, chat_template=chat_template,
        )
        return config, processor

    def build_smoke(self, seed, attn_implementation, **pixel_budget):
        tokenizer = self.build_smoke_tokenizer()
        config, processor = self.smoke_config(tokenizer)
        config.initializer_range = _smoke.INITIALIZER_RANGE
        (model_class,) = self.model_classes.values()
        return _smoke.seeded_model(model_class, config, seed, attn_implementation, tokenizer), processor
