"""The high-resolution feature grid of LLaVA-NeXT / OneVision as `pack_image_features` builds it.

transformers 5.23 (`modeling_llava_next.pack_image_features`, and the OneVision variant):
the tile features are arranged into one grid of (tiles_y * g) x (tiles_x * g) patch features
(g = vision image_size // patch_size), `unpad_image` cuts the rows (or columns) that the
centred padding occupies — with its own integer rounding, at feature level — and OneVision
bilinearly downsamples the remaining grid when it exceeds `anyres_max_N` tiles' worth of
features. Then `image_newline` is appended after every row and the rows are flattened.

`packed_highres_grid` returns, for every kept feature in that order, the box it covers in the
padded canvas's patch grid (units of vision patches; a downsampled cell covers the area of
the input cells it resamples). `AnyresFamily.place` lays out both views: view 0, the whole
image squashed to the tower size, row-major; then view 1, the anyres canvas (aspect-preserving
resize into the best pinpoint, centred pad, tiles), unpadded at feature level, row-major with one
`image_newline` token after every row (keep = False). A token's rect is the area its (resampled)
cell covers; rows/cols of view 1 index the packed grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.attention.cache import VIEW_BASE, VIEW_HIGHRES
from pipeline.vlm_families._geometry import PlacementError, anyres_base_map, anyres_canvas, check_tiles_unchanged
from pipeline.vlm_families._llava import LlavaBase, tower_output
from pipeline.vlm_families._placement import check_same, grid_view


@dataclass(frozen=True)
class PackedGrid:
    """The packed high-resolution grid: n_rows x n_cols features (newlines not counted)."""

    n_rows: int
    n_cols: int
    boxes: np.ndarray  # float64 [n_rows * n_cols, 4] x0, y0, x1, y1 in canvas patch units, row-major


def unpadded_span(image_hw: tuple[int, int], grid_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) that `unpad_image` keeps of a grid_hw feature grid.

    Same float expressions as transformers' `unpad_image` (and the processors'
    `_get_unpadded_features`), so the integer rounding agrees exactly.
    """
    original_height, original_width = image_hw
    current_height, current_width = grid_hw
    if original_width / original_height > current_width / current_height:
        scale_factor = current_width / original_width
        new_height = int(round(original_height * scale_factor, 7))
        padding = (current_height - new_height) // 2
        return padding, current_height - padding, 0, current_width
    scale_factor = current_height / original_height
    new_width = int(round(original_width * scale_factor, 7))
    padding = (current_width - new_width) // 2
    return 0, current_height, padding, current_width - padding


def max_num_tiles(vision_aspect_ratio: str) -> int:
    """N of OneVision's "anyres_max_N" (parsed as transformers does)."""
    return int(vision_aspect_ratio.strip("anyres_max_"))


def downsampled_hw(rows: int, cols: int, grid_side: int, max_tiles: int) -> tuple[int, int] | None:
    """OneVision's target size when the unpadded grid exceeds max_tiles tiles (ratio > 1.1), else None."""
    ratio = math.sqrt(rows * cols / (max_tiles * grid_side**2))
    if ratio > 1.1:
        return int(rows // ratio), int(cols // ratio)
    return None


def packed_highres_grid(
    image_hw: tuple[int, int],
    tiles_hw: tuple[int, int],
    grid_side: int,
    max_tiles: int | None,
) -> PackedGrid:
    """Boxes of the packed high-resolution features, in flattening order (row-major).

    tiles_hw: tile rows/cols of the canvas (`get_anyres_image_grid_shape`); grid_side: patches
    per tile side; max_tiles: OneVision's anyres_max_N (None for LLaVA-NeXT: no downsampling).
    """
    grid_hw = (tiles_hw[0] * grid_side, tiles_hw[1] * grid_side)
    row0, row1, col0, col1 = unpadded_span(image_hw, grid_hw)
    rows, cols = row1 - row0, col1 - col0
    target = downsampled_hw(rows, cols, grid_side, max_tiles) if max_tiles is not None else None
    out_rows, out_cols = target if target is not None else (rows, cols)
    # Output cell i of a resize from n to m cells covers input [i*n/m, (i+1)*n/m) (identity if n == m).
    ys = np.arange(out_rows + 1, dtype=np.float64) * (rows / out_rows if out_rows else 0.0) + row0
    xs = np.arange(out_cols + 1, dtype=np.float64) * (cols / out_cols if out_cols else 0.0) + col0
    y0, x0 = np.meshgrid(ys[:-1], xs[:-1], indexing="ij")
    y1, x1 = np.meshgrid(ys[1:], xs[1:], indexing="ij")
    boxes = np.stack([x0.ravel(), y0.ravel(), x1.ravel(), y1.ravel()], axis=1)
    return PackedGrid(n_rows=int(out_rows), n_cols=int(out_cols), boxes=boxes)


def _canvas_edges(f: np.ndarray, grid_side: int, n_tiles: int, tile_px: int, patch: int, end: bool) -> np.ndarray:
    """Canvas pixel of a feature-grid coordinate: tile t = f // g starts at t*tile_px, its
    patches are `patch` px wide (SigLIP 384/14 leaves the last 6 px of a tile unseen). An end
    coordinate on a tile boundary belongs to the tile before it."""
    tile = np.ceil(f / grid_side) - 1 if end else np.floor(f / grid_side)
    tile = np.clip(tile, 0, n_tiles - 1)
    return tile * tile_px + (f - tile * grid_side) * patch


class AnyresFamily(LlavaBase):
    """A LLaVA family with anyres tiling (LLaVA-NeXT, and OneVision building on it)."""

    token_size = "one 14-px vision patch of the base view or of a 336-px anyres tile"

    def max_tiles(self, config, processor) -> int | None:
        """The tile budget above which the packed grid is downsampled (None: never)."""
        return None

    def place(self, config, processor, image_hw, tokens):
        from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape

        vision, image_processor = config.vision_config, processor.image_processor
        patch, side = vision.patch_size, vision.image_size
        grid_side = side // patch
        pinpoints = [list(p) for p in config.image_grid_pinpoints]
        check_same("image_grid_pinpoints", pinpoints, [list(p) for p in image_processor.image_grid_pinpoints])
        check_same("patch_size", patch, getattr(processor, "patch_size", None))
        max_tiles = self.max_tiles(config, processor)
        keep_cls, first_patch = tower_output(vision, config.vision_feature_select_strategy)
        if keep_cls or first_patch:
            raise PlacementError(
                f"{config.model_type}: vision_feature_select_strategy {config.vision_feature_select_strategy!r} "
                f"with a {vision.model_type} tower does not give {grid_side}x{grid_side} features per tile; "
                "transformers cannot pack it"
            )

        base_pm, base_hw = anyres_base_map(image_processor, image_hw)
        if base_hw != (side, side):
            raise PlacementError(f"base patch is {base_hw} pixels, the vision tower expects {side}x{side}")
        shapes = {VIEW_BASE: grid_view(tokens, VIEW_BASE, base_pm, base_hw, patch, image_hw)}

        canvas = anyres_canvas(image_processor, pinpoints, image_hw)
        check_tiles_unchanged(image_processor, canvas.tile_px, side)
        tiles_hw = tuple(int(v) for v in get_anyres_image_grid_shape(list(image_hw), pinpoints, side))
        if tiles_hw != (canvas.best_hw[0] // canvas.tile_px, canvas.best_hw[1] // canvas.tile_px):
            raise PlacementError(f"tile grid {tiles_hw} does not match the canvas {canvas.best_hw}")
        grid = packed_highres_grid(image_hw, tiles_hw, grid_side, max_tiles)
        b = grid.boxes
        canvas_px = np.stack([
            _canvas_edges(b[:, 0], grid_side, tiles_hw[1], canvas.tile_px, patch, end=False),
            _canvas_edges(b[:, 1], grid_side, tiles_hw[0], canvas.tile_px, patch, end=False),
            _canvas_edges(b[:, 2], grid_side, tiles_hw[1], canvas.tile_px, patch, end=True),
            _canvas_edges(b[:, 3], grid_side, tiles_hw[0], canvas.tile_px, patch, end=True),
        ], axis=1)
        rects = canvas.pixel_map.to_original(canvas_px, image_hw)
        for r in range(grid.n_rows):
            row = slice(r * grid.n_cols, (r + 1) * grid.n_cols)
            tokens.add(VIEW_HIGHRES, [r] * grid.n_cols, list(range(grid.n_cols)), rects[row], b[row])
            tokens.skip()  # image_newline after every row
        shapes[VIEW_HIGHRES] = (grid.n_rows, grid.n_cols)
        return shapes
