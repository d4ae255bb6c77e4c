"""Where every image token of a LLaVA-family prompt sits in the original image.

`placement_for(model_config, processor, image_hw)` returns an `ImageTokenLayout`: for the
image-token positions of the prompt (`input_ids == image_token_id`, in sequence order) which
are spatial patches (`keep`), and for those the `TokenPlacement` of the attention cache:
view (0 = base / coarse, 1 = high-resolution canvas), row and column in the view's token grid,
and the rectangle in original-image pixels the token's vision patch covers.

Layouts (transformers 5.23, checked against its own feature packing in tests/test_placement*):

    llava            one view: the processed image (LLaVA-1.5: shortest edge resized to 336,
                     centre crop 336 — tokens see only the crop), patches row-major.
    llava_next       view 0: the whole image squashed to the tower size, row-major; then view 1:
                     the anyres canvas (aspect-preserving resize into the best pinpoint,
                     centred pad, tiles), unpadded at feature level, row-major with one
                     `image_newline` token after every row (keep = False).
    llava_onevision  as llava_next, with the unpadded grid bilinearly downsampled when it
                     exceeds `anyres_max_N` tiles (a token's rect is the area its resampled
                     cell covers).
    qwen2_vl,        one view: the whole image resized by `smart_resize` within the pixel
    qwen2_5_vl       budget, one token per 2x2 group of 14-px patches, row-major
                     (`placement_qwen.py`).
    qwen3_vl         the same with 16-px patches (32-px tokens; qwen3_vl_moe alike).

`vision_feature_select_strategy`: "default" drops the first vision-tower output (the CLS of a
CLIP tower; the first patch of a tower without CLS), "full" keeps it (a kept CLS is an
image-token position with keep = False).

Rows/cols of view 1 index the packed grid (after unpadding and downsampling), so each view's
tokens form a full `view_shapes[v]` raster. Rects are clipped to the image; a token may cover
part of the processor's padding. The layout assumes the processor is called with its own
default settings (no per-call image kwargs) and one image per prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.attention.cache import VIEW_BASE, VIEW_HIGHRES, TokenPlacement
from pipeline.attention.placement_anyres import max_num_tiles, packed_highres_grid
from pipeline.attention.placement_geometry import (
    PixelMap,
    PlacementError,
    anyres_base_map,
    anyres_canvas,
    check_tiles_unchanged,
    single_view_map,
)
from pipeline.attention.placement_qwen import qwen_token_grid

__all__ = [
    "ImageTokenLayout",
    "PlacementError",
    "image_token_positions",
    "placement_for",
]

# Vision towers whose output starts with a CLS token (CLIP) or not (SigLIP).
_TOWER_HAS_CLS = {"clip_vision_model": True, "siglip_vision_model": False}


@dataclass
class ImageTokenLayout:
    """Image tokens of one image in one prompt: which are spatial, and where they sit."""

    family: str
    image_hw: tuple[int, int]  # original image (height, width)
    image_token_id: int
    placement: TokenPlacement  # one row per kept image token, in sequence order
    keep: np.ndarray  # bool [n_image_tokens]: False for newline / CLS positions
    feature_box: np.ndarray  # float64 [T, 4] x0, y0, x1, y1 in the view's patch grid (view 1: padded canvas)
    view_shapes: dict[int, tuple[int, int]] = field(default_factory=dict)  # view -> (rows, cols)

    @property
    def n_image_tokens(self) -> int:
        """Image-token positions the processor inserts for this image (newlines included)."""
        return int(self.keep.shape[0])

    def image_positions(self, input_ids) -> np.ndarray:
        """Sequence positions of all image tokens of a single-prompt `input_ids` ([S] or [1, S])."""
        positions = image_token_positions(input_ids, self.image_token_id)
        if positions.shape[0] != self.n_image_tokens:
            raise PlacementError(
                f"the prompt holds {positions.shape[0]} image tokens (id {self.image_token_id}) but "
                f"the {self.family} layout of a {self.image_hw[0]}x{self.image_hw[1]} image has "
                f"{self.n_image_tokens}: prompt and image do not belong together"
            )
        return positions

    def kept_positions(self, input_ids) -> np.ndarray:
        """Sequence positions of the spatial image tokens, aligned with the placement rows."""
        return self.image_positions(input_ids)[self.keep]


def image_token_positions(input_ids, image_token_id: int) -> np.ndarray:
    """Positions (int64, ascending) where a single prompt's input_ids equal image_token_id."""
    ids = input_ids.detach().cpu().numpy() if hasattr(input_ids, "detach") else np.asarray(input_ids)
    if ids.ndim == 2:
        if ids.shape[0] != 1:
            raise PlacementError(f"expected one prompt, got input_ids of shape {tuple(ids.shape)}")
        ids = ids[0]
    if ids.ndim != 1:
        raise PlacementError(f"expected input_ids of shape [S] or [1, S], got {tuple(ids.shape)}")
    return np.flatnonzero(ids == int(image_token_id)).astype(np.int64)


# ---------------------------------------------------------------- building blocks

@dataclass
class _Tokens:
    """Accumulates image-token positions in sequence order."""

    keep: list = field(default_factory=list)
    view: list = field(default_factory=list)
    row: list = field(default_factory=list)
    col: list = field(default_factory=list)
    rect: list = field(default_factory=list)
    box: list = field(default_factory=list)

    def skip(self, count: int = 1) -> None:
        self.keep.extend([False] * count)

    def add(self, view: int, rows, cols, rects, boxes) -> None:
        n = len(rows)
        self.keep.extend([True] * n)
        self.view.extend([view] * n)
        self.row.extend(rows)
        self.col.extend(cols)
        self.rect.extend(np.asarray(rects).reshape(-1, 4))
        self.box.extend(np.asarray(boxes).reshape(-1, 4))


def _tower_output(vision_config, strategy: str) -> tuple[bool, int]:
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


def _grid_view(tokens: _Tokens, view: int, pm: PixelMap, processed_hw, patch: int, image_hw,
               first_patch: int = 0) -> tuple[int, int]:
    """Append a plain patch grid of a processed frame (row-major from `first_patch`)."""
    rows_n, cols_n = processed_hw[0] // patch, processed_hw[1] // patch
    r, c = np.divmod(np.arange(first_patch, rows_n * cols_n), cols_n)
    boxes = np.stack([c, r, c + 1, r + 1], axis=1).astype(np.float64)
    tokens.add(view, r.tolist(), c.tolist(), pm.to_original(boxes * patch, image_hw), boxes)
    return rows_n, cols_n


def _canvas_edges(f: np.ndarray, grid_side: int, n_tiles: int, tile_px: int, patch: int, end: bool) -> np.ndarray:
    """Canvas pixel of a feature-grid coordinate: tile t = f // g starts at t*tile_px, its
    patches are `patch` px wide (SigLIP 384/14 leaves the last 6 px of a tile unseen). An end
    coordinate on a tile boundary belongs to the tile before it."""
    tile = np.ceil(f / grid_side) - 1 if end else np.floor(f / grid_side)
    tile = np.clip(tile, 0, n_tiles - 1)
    return tile * tile_px + (f - tile * grid_side) * patch


# ---------------------------------------------------------------- families

def _check_same(what: str, model_value, processor_value) -> None:
    if processor_value is not None and model_value != processor_value:
        raise PlacementError(f"model config and processor disagree on {what}: {model_value!r} vs {processor_value!r}")


def _place_llava(config, processor, image_hw, tokens: _Tokens) -> dict:
    vision = config.vision_config
    _check_same("patch_size", vision.patch_size, getattr(processor, "patch_size", None))
    pm, processed_hw = single_view_map(processor.image_processor, image_hw)
    keep_cls, first_patch = _tower_output(vision, config.vision_feature_select_strategy)
    if keep_cls:
        tokens.skip()
    shape = _grid_view(tokens, VIEW_BASE, pm, processed_hw, vision.patch_size, image_hw, first_patch)
    return {VIEW_BASE: shape}


def _place_anyres(config, processor, image_hw, tokens: _Tokens) -> dict:
    from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape

    vision, image_processor = config.vision_config, processor.image_processor
    patch, side = vision.patch_size, vision.image_size
    grid_side = side // patch
    pinpoints = [list(p) for p in config.image_grid_pinpoints]
    _check_same("image_grid_pinpoints", pinpoints, [list(p) for p in image_processor.image_grid_pinpoints])
    _check_same("patch_size", patch, getattr(processor, "patch_size", None))
    max_tiles = None
    if config.model_type == "llava_onevision":
        _check_same("vision_aspect_ratio", config.vision_aspect_ratio, getattr(processor, "vision_aspect_ratio", None))
        _check_same("tokens per tile", grid_side * grid_side, getattr(processor, "num_image_tokens", None))
        max_tiles = max_num_tiles(config.vision_aspect_ratio)
    keep_cls, first_patch = _tower_output(vision, config.vision_feature_select_strategy)
    if keep_cls or first_patch:
        raise PlacementError(
            f"{config.model_type}: vision_feature_select_strategy {config.vision_feature_select_strategy!r} with a "
            f"{vision.model_type} tower does not give {grid_side}x{grid_side} features per tile; transformers "
            "cannot pack it"
        )

    base_pm, base_hw = anyres_base_map(image_processor, image_hw)
    if base_hw != (side, side):
        raise PlacementError(f"base patch is {base_hw} pixels, the vision tower expects {side}x{side}")
    shapes = {VIEW_BASE: _grid_view(tokens, VIEW_BASE, base_pm, base_hw, patch, image_hw)}

    canvas = anyres_canvas(image_processor, pinpoints, image_hw)
    check_tiles_unchanged(image_processor, canvas.tile_px, side)
    tiles_hw = tuple(int(v) for v in get_anyres_image_grid_shape(list(image_hw), pinpoints, side))
    if tiles_hw != (canvas.best_hw[0] // canvas.tile_px, canvas.best_hw[1] // canvas.tile_px):
        raise PlacementError(f"tile grid {tiles_hw} does not match the canvas {canvas.best_hw}")
    grid = packed_highres_grid(image_hw, tiles_hw, grid_side, max_tiles)
    b = grid.boxes
    canvas_px = np.stack(
        [
            _canvas_edges(b[:, 0], grid_side, tiles_hw[1], canvas.tile_px, patch, end=False),
            _canvas_edges(b[:, 1], grid_side, tiles_hw[0], canvas.tile_px, patch, end=False),
            _canvas_edges(b[:, 2], grid_side, tiles_hw[1], canvas.tile_px, patch, end=True),
            _canvas_edges(b[:, 3], grid_side, tiles_hw[0], canvas.tile_px, patch, end=True),
        ],
        axis=1,
    )
    rects = canvas.pixel_map.to_original(canvas_px, image_hw)
    for r in range(grid.n_rows):
        row = slice(r * grid.n_cols, (r + 1) * grid.n_cols)
        tokens.add(VIEW_HIGHRES, [r] * grid.n_cols, list(range(grid.n_cols)), rects[row], b[row])
        tokens.skip()  # image_newline after every row
    shapes[VIEW_HIGHRES] = (grid.n_rows, grid.n_cols)
    return shapes


def _place_qwen(config, processor, image_hw, tokens: _Tokens) -> dict:
    grid = qwen_token_grid(config, processor, image_hw)
    tokens.add(VIEW_BASE, grid.rows.tolist(), grid.cols.tolist(), grid.rects, grid.boxes)
    return {VIEW_BASE: grid.shape}


_PLACERS = {
    "llava": _place_llava,
    "llava_next": _place_anyres,
    "llava_onevision": _place_anyres,
    "qwen2_vl": _place_qwen,
    "qwen2_5_vl": _place_qwen,
    "qwen3_vl": _place_qwen,  # 32-px tokens, same raster (qwen3_vl.py)
    "qwen3_vl_moe": _place_qwen,
}
"""The one family dispatch: model_type of the model config -> layout builder."""


def _processor_token_count(processor, image_hw) -> int:
    data = processor._get_num_multimodal_tokens(image_sizes=[list(image_hw)])
    return int(data.num_image_tokens[0])


def placement_for(model_config, processor, image_size_hw: tuple[int, int]) -> ImageTokenLayout:
    """Layout of the image tokens of one `image_size_hw` = (height, width) image.

    `model_config`: the VLM's config (`model.config`); `processor`: its processor (real class,
    default settings). Raises PlacementError when the family is unknown, the config and
    processor disagree, or the token count differs from the processor's own count.
    """
    family = getattr(model_config, "model_type", None)
    if family not in _PLACERS:
        raise PlacementError(f"no image-token placement for model_type {family!r} (known: {sorted(_PLACERS)})")
    height, width = (int(v) for v in image_size_hw)
    if height <= 0 or width <= 0:
        raise PlacementError(f"invalid image size (height, width) = {tuple(image_size_hw)}")
    _check_same(
        "vision_feature_select_strategy",
        getattr(model_config, "vision_feature_select_strategy", None),
        getattr(processor, "vision_feature_select_strategy", None),
    )
    image_hw = (height, width)
    tokens = _Tokens()
    shapes = _PLACERS[family](model_config, processor, image_hw, tokens)

    keep = np.asarray(tokens.keep, dtype=bool)
    expected = _processor_token_count(processor, image_hw)
    if keep.shape[0] != expected:
        raise PlacementError(
            f"{family}: placed {keep.shape[0]} image tokens for a {height}x{width} image but the "
            f"processor ({type(processor).__name__}) inserts {expected}"
        )
    n = int(keep.sum())
    placement = TokenPlacement(
        view=np.asarray(tokens.view, dtype=np.int8).reshape(n),
        row=np.asarray(tokens.row, dtype=np.int32).reshape(n),
        col=np.asarray(tokens.col, dtype=np.int32).reshape(n),
        rect=np.asarray(tokens.rect, dtype=np.float32).reshape(n, 4),
    )
    return ImageTokenLayout(
        family=family,
        image_hw=image_hw,
        image_token_id=int(model_config.image_token_id),
        placement=placement,
        keep=keep,
        feature_box=np.asarray(tokens.box, dtype=np.float64).reshape(n, 4),
        view_shapes=shapes,
    )
