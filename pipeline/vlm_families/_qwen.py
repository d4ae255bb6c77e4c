"""What the Qwen-VL families (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) share: a whole-image `smart_resize`
within a pixel budget, image tokens that are merged groups of vision patches in raster order,
M-RoPE positions, ChatML and the real processor without its video part.

Placement (transformers 5.24, `Qwen2VLImageProcessorPil`, the vision towers and mergers): the image
is resized as a whole (no crop, no pad) to `smart_resize(h, w, factor = patch_size * merge_size,
min_pixels, max_pixels)` (both sides multiples of the factor, area within the pixel budget, aspect
ratio kept as closely as possible); `image_grid_thw` = (1, H/patch, W/patch) counts its patches.
`patchify` orders the patches by merge group, groups in raster order; the merger turns each group
of merge_size² consecutive patches into one language-model token (Qwen2.5-VL's window attention
permutes the patches inside the tower and restores this order before the merger). So token i
covers the cell (i // (W/factor), i % (W/factor)) of the resized image. All tokens are spatial:
`<|vision_start|>` / `<|vision_end|>` around the run are other token ids.

Positions: M-RoPE position ids are built by the model from `image_grid_thw` and `mm_token_type_ids`
at the prefill (cache empty); the model keeps the offset of the text positions after the image
(`rope_deltas`) and continues from cache length + that offset on a non-empty cache, so a prefix
keeps its `rope_deltas` (`rope_state`) and hands them back before each forward on its cache.

Default pixel budget: 1,024 to 1,280 image tokens for every Qwen family (grounding degrades below
about 1,024 tokens, llama.cpp PR 17020; 1,280 is transformers' default token budget of the image
processor class; the checkpoints' own preprocessor configs allow up to 16,384 tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.attention.cache import VIEW_BASE
from pipeline.vlm_families import _smoke
from pipeline.vlm_families._geometry import PixelMap, PlacementError
from pipeline.vlm_families._image_only import image_only_processor_class
from pipeline.vlm_families._placement import check_same
from pipeline.vlm_families.family import LayerDepths, VlmFamily, check_budget_values

MIN_TOKENS, MAX_TOKENS = 1024, 1280
"""The default pixel budget in image tokens (see the module docstring)."""

QWEN_LM_DEPTHS = LayerDepths((0.5, 0.79), (
    "Qwen2-based language models (28 layers): DecAF reads the middle layer (~14 of 28 = 0.5), ViCrop "
    "layer 22 of 28 (0.79); cross-modal flow concentrates in the middle layers (Kaduri et al.), so the "
    "middle and the upper-middle layer are both kept"))

VISION_TOKENS = {"image": "<|image_pad|>", "video": "<|video_pad|>", "vision_start": "<|vision_start|>",
                 "vision_end": "<|vision_end|>"}
"""The vision tokens of every Qwen-VL tokenizer; the model config names them `<kind>_token_id`."""


@dataclass(frozen=True)
class QwenTokenGrid:
    """The merged-token grid of one image, row-major (the order of its image tokens)."""

    rows: np.ndarray  # int [T]
    cols: np.ndarray  # int [T]
    rects: np.ndarray  # float64 [T, 4] x0, y0, x1, y1 in original-image pixels
    boxes: np.ndarray  # float64 [T, 4] the same cell in units of vision patches
    shape: tuple[int, int]  # (rows, cols) of merged tokens
    resized_hw: tuple[int, int]  # the image size the vision tower sees


def resized_hw(image_processor, image_hw: tuple[int, int]) -> tuple[int, int]:
    """(height, width) the processor resizes an image to: transformers' own `smart_resize`."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    size = image_processor.size
    min_pixels, max_pixels = size.get("shortest_edge"), size.get("longest_edge")
    if not min_pixels or not max_pixels:
        raise PlacementError(f"Qwen image processor size {size!r} lacks shortest_edge/longest_edge (the pixel budget)")
    factor = image_processor.patch_size * image_processor.merge_size
    return tuple(int(v) for v in smart_resize(image_hw[0], image_hw[1], factor=factor,
                                              min_pixels=min_pixels, max_pixels=max_pixels))


def qwen_token_grid(config, processor, image_hw: tuple[int, int]) -> QwenTokenGrid:
    """Rows, columns and pixel rectangles of the image tokens of an `image_hw` image."""
    vision, image_processor = config.vision_config, processor.image_processor
    check_same("merge size", vision.spatial_merge_size, getattr(image_processor, "merge_size", -1))
    check_same("patch_size", vision.patch_size, image_processor.patch_size)
    check_same("temporal_patch_size", vision.temporal_patch_size, image_processor.temporal_patch_size)
    patch, merge = vision.patch_size, vision.spatial_merge_size
    cell = patch * merge
    out_hw = resized_hw(image_processor, image_hw)
    n_rows, n_cols = out_hw[0] // cell, out_hw[1] // cell
    r, c = np.divmod(np.arange(n_rows * n_cols), n_cols)
    boxes = np.stack([c, r, c + 1, r + 1], axis=1).astype(np.float64) * merge
    pixel_map = PixelMap(scale_y=out_hw[0] / image_hw[0], scale_x=out_hw[1] / image_hw[1])
    rects = pixel_map.to_original(boxes * patch, image_hw)
    return QwenTokenGrid(r, c, rects, boxes, (int(n_rows), int(n_cols)), out_hw)


class QwenFamily(VlmFamily):
    """A Qwen-VL family. Subclasses set the geometry, tokens, template and `smoke_config`.

    special_tokens  the tokenizer's added tokens in id order (real ids from 151643, right after the
                    Qwen2 BPE's 151643 entries); the first `n_special` are special
    vision_tokens   the kinds of `VISION_TOKENS` the family's processor sets as attributes
    image_mean/std  the image processor's normalisation (None: the class default, CLIP's)
    """

    patch_size = 14
    merge_size = 2
    temporal_patch_size = 2
    image_mean: tuple[float, ...] | None = None
    image_std: tuple[float, ...] | None = None
    processor_name = ""
    chat_template = ""
    special_tokens: tuple[str, ...] = ()
    n_special: int = 0
    vision_tokens: tuple[str, ...] = ("image", "video")
    layer_depths = QWEN_LM_DEPTHS
    per_token_inputs = ("mm_token_type_ids",)

    @property
    def token_px(self) -> int:
        """Side in pixels of the resized-image cell one image token covers."""
        return self.patch_size * self.merge_size

    @property
    def pixel_budget(self) -> tuple[int, int]:
        return MIN_TOKENS * self.token_px**2, MAX_TOKENS * self.token_px**2

    @property
    def token_size(self) -> str:
        return (f"{self.token_px} x {self.token_px} px of the resized image ({self.patch_size}-px patches "
                f"merged {self.merge_size}x{self.merge_size})")

    # ------------------------------------------------------------ processor

    def check_pixel_budget(self, min_pixels, max_pixels):
        check_budget_values(min_pixels, max_pixels, self.token_px**2,
                            f" (one {self.token_px}x{self.token_px} token of {self.name})")

    def processor_class(self):
        tokens = tuple((kind, VISION_TOKENS[kind]) for kind in self.vision_tokens)
        return image_only_processor_class(self.processor_name, tokens)

    def image_processor(self, min_pixels: int, max_pixels: int):
        """The family's PIL image processor (the checkpoints' settings) with the given pixel budget."""
        from transformers import Qwen2VLImageProcessorPil

        self.check_pixel_budget(min_pixels, max_pixels)
        normalise = {} if self.image_mean is None else {"image_mean": list(self.image_mean),
                                                        "image_std": list(self.image_std)}
        return Qwen2VLImageProcessorPil(
            size={"shortest_edge": min_pixels, "longest_edge": max_pixels}, patch_size=self.patch_size,
            temporal_patch_size=self.temporal_patch_size, merge_size=self.merge_size, **normalise)

    def load_processor(self, model_id, min_pixels=None, max_pixels=None, **hub_kwargs):
        """The checkpoint's processor, its image processor (PIL backend) with our pixel budget
        replacing its own (`size` and the older min_pixels / max_pixels keys alike)."""
        from transformers import Qwen2VLImageProcessorPil

        budget = self.budget_kwargs(min_pixels, max_pixels)
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(
            model_id, size={"shortest_edge": budget["min_pixels"], "longest_edge": budget["max_pixels"]},
            **budget, **hub_kwargs)
        return self.processor_class().from_pretrained(model_id, image_processor=image_processor, **hub_kwargs)

    # ------------------------------------------------------------ placement and positions

    def place(self, config, processor, image_hw, tokens):
        grid = qwen_token_grid(config, processor, image_hw)
        tokens.add(VIEW_BASE, grid.rows.tolist(), grid.cols.tolist(), grid.rects, grid.boxes)
        return {VIEW_BASE: grid.shape}

    def rope_state(self, model):
        return model.model.rope_deltas

    def restore_rope_state(self, model, state):
        if state is None:
            raise RuntimeError(f"the prefix was prefilled without M-RoPE rope_deltas but {self.name} uses them")
        model.model.rope_deltas = state

    # ------------------------------------------------------------ smoke model

    def build_smoke_tokenizer(self):
        """Byte-level BPE trained locally with the family's added tokens (ChatML, no BOS; smoke ids)."""
        special = self.special_tokens[:self.n_special]
        return _smoke.smoke_tokenizer(special, eos="<|im_end|>", pad="<|endoftext|>", additional=special[1:],
                                      plain=self.special_tokens[self.n_special:])

    def vision_token_ids(self, tokenizer) -> dict:
        """The model config's `<kind>_token_id` of every vision token."""
        return {f"{kind}_token_id": tokenizer.convert_tokens_to_ids(token) for kind, token in VISION_TOKENS.items()}

    def smoke_config(self, tokenizer):
        """The tiny model config around `tokenizer` (the real geometry, M-RoPE scaled to the head size)."""
        raise NotImplementedError

    def build_smoke(self, seed, attn_implementation, min_pixels=None, max_pixels=None):
        budget = self.budget_kwargs(min_pixels, max_pixels)
        tokenizer = self.build_smoke_tokenizer()
        processor = self.processor_class()(image_processor=self.image_processor(**budget), tokenizer=tokenizer,
                                           chat_template=self.chat_template)
        config = self.smoke_config(tokenizer)
        config.initializer_range = _smoke.INITIALIZER_RANGE
        model = _smoke.seeded_model(self.model_classes[self.name], config, seed, attn_implementation, tokenizer,
                                    bos_token_id=config.get_text_config().bos_token_id)
        return model, processor
