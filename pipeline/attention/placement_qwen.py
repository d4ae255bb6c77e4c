"""Where the image tokens of Qwen2-VL / Qwen2.5-VL sit in the original image.

transformers 5.24 (`Qwen2VLImageProcessorPil`, the models' vision towers and merger):
the image is resized as a whole (no crop, no pad) to `smart_resize(h, w, factor =
patch_size * merge_size, min_pixels, max_pixels)` (both sides multiples of 28 px, area within
the pixel budget, aspect ratio kept as closely as possible); `image_grid_thw` = (1, H/14,
W/14) counts its 14-px patches. `patchify` orders the patches by 2x2 merge group, groups in
raster order; the merger turns each group of 4 consecutive patches into one language-model
token (Qwen2.5-VL's window attention permutes the patches inside the tower and restores this
order before the merger). So token i covers the 28x28-px cell (i // (W/28), i % (W/28)) of the
resized image. All tokens are spatial: `<|vision_start|>` / `<|vision_end|>` around the run
are other token ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.attention.placement_geometry import PixelMap, PlacementError


@dataclass(frozen=True)
class QwenTokenGrid:
    """The merged-token grid of one image, row-major (the order of its image tokens)."""

    rows: np.ndarray  # int [T]
    cols: np.ndarray  # int [T]
    rects: np.ndarray  # float64 [T, 4] x0, y0, x1, y1 in original-image pixels
    boxes: np.ndarray  # float64 [T, 4] the same cell in units of 14-px vision patches
    shape: tuple[int, int]  # (rows, cols) of merged tokens
    resized_hw: tuple[int, int]  # the image size the vision tower sees


def _check_same(what: str, model_value, processor_value) -> None:
    if model_value != processor_value:
        raise PlacementError(f"model config and processor disagree on {what}: {model_value!r} vs {processor_value!r}")


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
    _check_same("merge size", vision.spatial_merge_size, getattr(image_processor, "merge_size", None))
    _check_same("patch_size", vision.patch_size, image_processor.patch_size)
    _check_same("temporal_patch_size", vision.temporal_patch_size, image_processor.temporal_patch_size)
    patch, merge = vision.patch_size, vision.spatial_merge_size
    cell = patch * merge
    out_hw = resized_hw(image_processor, image_hw)
    n_rows, n_cols = out_hw[0] // cell, out_hw[1] // cell
    r, c = np.divmod(np.arange(n_rows * n_cols), n_cols)
    boxes = np.stack([c, r, c + 1, r + 1], axis=1).astype(np.float64) * merge
    pixel_map = PixelMap(scale_y=out_hw[0] / image_hw[0], scale_x=out_hw[1] / image_hw[1])
    rects = pixel_map.to_original(boxes * patch, image_hw)
    return QwenTokenGrid(r, c, rects, boxes, (int(n_rows), int(n_cols)), out_hw)
