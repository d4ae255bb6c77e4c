"""Pixel geometry of the LLaVA-family image processors (transformers 5.23, PIL backend).

Every step the image processors apply to an image before the vision tower is, per axis, an
affine map of continuous pixel coordinates (pixel i spans [i, i+1)):

    resize to (h', w')        y' = y * h'/h              (PIL resamples the full extent)
    pad (centred, offset p)   y' = y + p
    crop (offset t)           y' = y - t                 (transformers' centre crop: t = (h-ch)//2,
                                                          also when it pads a too-small image)

`PixelMap` composes them; `PixelMap.to_original` maps rectangles of the processed frame
(e.g. a vision patch) back to original-image pixels. The functions below reproduce the size
arithmetic of the processors by calling transformers' own helpers where they are public.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import VlmsamError


class PlacementError(VlmsamError, ValueError):
    """The model / processor configuration cannot be placed (inconsistent or unsupported)."""


@dataclass(frozen=True)
class PixelMap:
    """Per-axis affine map from original-image pixels to a processed frame: out = in*scale + offset."""

    scale_y: float = 1.0
    offset_y: float = 0.0
    scale_x: float = 1.0
    offset_x: float = 0.0

    def then(self, other: "PixelMap") -> "PixelMap":
        """The map applying `self` first, then `other`."""
        return PixelMap(
            scale_y=self.scale_y * other.scale_y,
            offset_y=self.offset_y * other.scale_y + other.offset_y,
            scale_x=self.scale_x * other.scale_x,
            offset_x=self.offset_x * other.scale_x + other.offset_x,
        )

    def to_original(self, rects: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
        """Map rects [N, 4] (x0, y0, x1, y1) of the processed frame to original pixels, clipped."""
        rects = np.asarray(rects, dtype=np.float64)
        x = (rects[:, [0, 2]] - self.offset_x) / self.scale_x
        y = (rects[:, [1, 3]] - self.offset_y) / self.scale_y
        height, width = image_hw
        out = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1)
        out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0.0, float(width))
        out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0.0, float(height))
        return out


def _shape_only(hw: tuple[int, int]) -> np.ndarray:
    """A zero-memory channels-first array of shape (3, h, w) for transformers' size helpers."""
    return np.broadcast_to(np.zeros((), dtype=np.uint8), (3, int(hw[0]), int(hw[1])))


def resize_output_hw(hw: tuple[int, int], size) -> tuple[int, int]:
    """Output (h, w) of the PIL backend's `resize(image, size)` (same branches as transformers)."""
    from transformers.image_transforms import get_resize_output_image_size, get_size_with_aspect_ratio
    from transformers.image_utils import ChannelDimension

    if size.shortest_edge and size.longest_edge:
        return tuple(get_size_with_aspect_ratio(tuple(hw), size.shortest_edge, size.longest_edge))
    if size.shortest_edge:
        return tuple(
            get_resize_output_image_size(
                _shape_only(hw), size=size.shortest_edge, default_to_square=False,
                input_data_format=ChannelDimension.FIRST,
            )
        )
    if size.height and size.width:
        return (int(size.height), int(size.width))
    raise PlacementError(f"unsupported image processor size {size!r} (expected shortest_edge or height/width)")


def resize_map(hw: tuple[int, int], out_hw: tuple[int, int]) -> PixelMap:
    return PixelMap(scale_y=out_hw[0] / hw[0], scale_x=out_hw[1] / hw[1])


def is_torchvision_backend(image_processor) -> bool:
    """True for transformers' torchvision ("fast") image processors (torchvision installed)."""
    return any(c.__name__ == "TorchvisionBackend" for c in type(image_processor).__mro__)


def _crop_offset(size: int, crop: int, torchvision: bool) -> int:
    """Shift of the image inside its centre crop along one axis.

    PIL backend (`image_transforms.center_crop`): top = (size - crop) // 2, also when it pads a
    too-small image (top < 0). Torchvision backend: a too-small axis is padded by
    (crop - size) // 2 before; otherwise top = int((size - crop) / 2).
    """
    if torchvision and crop > size:
        return (crop - size) // 2
    return -((size - crop) // 2)


def center_crop_map(hw: tuple[int, int], crop, torchvision: bool = False) -> tuple[PixelMap, tuple[int, int]]:
    """The centre crop of the image processor as a PixelMap, and the cropped (h, w)."""
    crop_h, crop_w = int(crop.height), int(crop.width)
    return (
        PixelMap(offset_y=_crop_offset(hw[0], crop_h, torchvision), offset_x=_crop_offset(hw[1], crop_w, torchvision)),
        (crop_h, crop_w),
    )


def pad_to_square_map(hw: tuple[int, int]) -> tuple[PixelMap, tuple[int, int]]:
    """`LlavaImageProcessor.pad_to_square`: the image centred in a max(h, w) square."""
    side = max(hw)
    return PixelMap(offset_y=(side - hw[0]) // 2, offset_x=(side - hw[1]) // 2), (side, side)


def per_patch_steps(image_processor, pm: PixelMap, hw: tuple[int, int]) -> tuple[PixelMap, tuple[int, int]]:
    """The resize and centre crop every processed patch/image goes through (when enabled)."""
    if image_processor.do_resize:
        out = resize_output_hw(hw, image_processor.size)
        pm, hw = pm.then(resize_map(hw, out)), out
    if image_processor.do_center_crop:
        crop_pm, hw = center_crop_map(hw, image_processor.crop_size, is_torchvision_backend(image_processor))
        pm = pm.then(crop_pm)
    return pm, hw


def single_view_map(image_processor, image_hw: tuple[int, int]) -> tuple[PixelMap, tuple[int, int]]:
    """LLaVA-1.5's processed image: [pad to square], resize, [centre crop] (processor's settings)."""
    pm, hw = PixelMap(), tuple(image_hw)
    if getattr(image_processor, "do_pad", False):
        if not hasattr(image_processor, "pad_to_square"):
            raise PlacementError(
                f"{type(image_processor).__name__} has do_pad=True but no pad_to_square: its padding "
                "geometry is not supported"
            )
        pad_pm, hw = pad_to_square_map(hw)
        pm = pm.then(pad_pm)
    return per_patch_steps(image_processor, pm, hw)


def anyres_base_map(image_processor, image_hw: tuple[int, int]) -> tuple[PixelMap, tuple[int, int]]:
    """The base (overview) patch of LLaVA-NeXT/OneVision: the whole image squashed to the
    processor's square size, then the per-patch resize/crop."""
    size = image_processor.size
    side_hw = (size.height, size.width) if (size.height and size.width) else (size.shortest_edge,) * 2
    pm = resize_map(image_hw, side_hw)
    return per_patch_steps(image_processor, pm, side_hw)


@dataclass(frozen=True)
class AnyresCanvas:
    """The high-resolution canvas of LLaVA-NeXT/OneVision: the image resized (aspect kept) into
    the best pinpoint resolution, centred with zero padding, then cut into square tiles."""

    best_hw: tuple[int, int]  # pinpoint resolution chosen by select_best_resolution
    resized_hw: tuple[int, int]  # size of the resized image inside the canvas
    pixel_map: PixelMap  # original pixels -> canvas pixels
    tile_px: int  # side of one tile in canvas pixels


def tile_side(image_processor) -> int:
    """Tile side used by `_preprocess` (crop_size.height, else size.height, else shortest_edge)."""
    crop, size = image_processor.crop_size, image_processor.size
    if crop and crop.height:
        return int(crop.height)
    if size and size.height:
        return int(size.height)
    return int(size.shortest_edge)


def anyres_canvas(image_processor, pinpoints: list, image_hw: tuple[int, int]) -> AnyresCanvas:
    """Geometry of `get_image_patches`: select_best_resolution, aspect resize, centred pad."""
    from transformers.image_processing_utils import get_patch_output_size, select_best_resolution
    from transformers.image_utils import ChannelDimension

    best_hw = tuple(int(v) for v in select_best_resolution(tuple(image_hw), pinpoints))
    resized_hw = tuple(
        int(v) for v in get_patch_output_size(_shape_only(image_hw), best_hw, input_data_format=ChannelDimension.FIRST)
    )
    # _get_padding_size: paste = (target - resized) // 2 before, the remainder after.
    pad_y, pad_x = (best_hw[0] - resized_hw[0]) // 2, (best_hw[1] - resized_hw[1]) // 2
    pm = resize_map(image_hw, resized_hw).then(PixelMap(offset_y=pad_y, offset_x=pad_x))
    return AnyresCanvas(best_hw=best_hw, resized_hw=resized_hw, pixel_map=pm, tile_px=tile_side(image_processor))


def check_tiles_unchanged(image_processor, tile_px: int, vision_image_size: int) -> None:
    """The per-patch resize/crop must leave a tile as is, and a tile must be one vision input."""
    pm, hw = per_patch_steps(image_processor, PixelMap(), (tile_px, tile_px))
    if hw != (tile_px, tile_px) or pm != PixelMap() or tile_px != vision_image_size:
        raise PlacementError(
            f"unsupported anyres geometry: tiles of {tile_px}px become {hw} (map {pm}) in the image "
            f"processor, the vision tower expects {vision_image_size}px"
        )
