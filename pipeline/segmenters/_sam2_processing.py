"""SAM 2's image and prompt processing, as transformers' `Sam2Processor` does it, without torchvision.

transformers' SAM 2 image processor is a torchvision backend, and torchvision does not import beside
the project's CPU torch, so the same operations are written here on torch alone and proven equal to
the real processor on stored outputs (`tests/data/sam2_processor/`, `tests/test_sam2_processing.py`):

- image: RGB uint8 [H, W, 3] -> [1, 3, S, S] float32: resized to the model's square size
  (`size` of preprocessor_config.json) by bilinear interpolation with antialiasing
  (align_corners=False, no aspect preservation, no padding). As torchvision does on CPU, the
  resize runs on the uint8 image natively where torch has a native uint8 kernel (AVX2/AVX512,
  Arm) and otherwise in float32, rounded back to uint8; then (x - mean / r) / (std / r) in
  float32, with r the `rescale_factor` (rescale and normalisation fused as transformers does).
- points (x, y) in original pixels -> x * T / W, y * T / H, with T the processor's `target_size`
  (processor_config.json; the image size when absent). A box is its two corner points.
- masks: low-resolution logits [Q, 1, h, w] -> bilinear (align_corners=False) to the original
  [H, W], then > 0.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.errors import InputFileError, ParamsError

PREPROCESSOR_FILE = "preprocessor_config.json"
PROCESSOR_FILE = "processor_config.json"
BILINEAR = 2  # PIL's resampling code, the only one SAM 2 checkpoints use
MASK_THRESHOLD = 0.0
PUBLISHED_SIZE = 1024  # every published SAM 2.1 checkpoint's input side
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Sam2Processing:
    """The processing settings of one SAM 2 checkpoint folder."""

    size: tuple[int, int]  # (height, width) of the model input
    target_size: int  # the square side point coordinates are scaled to
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    rescale_factor: float

    @classmethod
    def published(cls, side: int = PUBLISHED_SIZE) -> Sam2Processing:
        """The settings the published SAM 2.1 checkpoints carry, at a square input of `side`."""
        return cls(size=(side, side), target_size=side, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
                   rescale_factor=1 / 255)

    @classmethod
    def from_folder(cls, folder: str | Path) -> Sam2Processing:
        """Read preprocessor_config.json (and processor_config.json when present) of a checkpoint
        folder; ParamsError naming the file for settings this implementation does not reproduce."""
        folder = Path(folder)
        path = folder / PREPROCESSOR_FILE
        config = _read_json(path)
        for flag in ("do_resize", "do_rescale", "do_normalize"):
            if config.get(flag, True) is not True:
                raise ParamsError(f"{path}: {flag} is {config[flag]!r}; SAM 2 checkpoints resize, rescale and normalise")
        if config.get("resample", BILINEAR) != BILINEAR:
            raise ParamsError(f"{path}: resample {config['resample']!r}; only bilinear (2) is implemented")
        if config.get("do_pad"):
            raise ParamsError(f"{path}: do_pad is set; SAM 2 checkpoints do not pad")
        size = config.get("size", {"height": PUBLISHED_SIZE, "width": PUBLISHED_SIZE})
        if set(size) != {"height", "width"}:
            raise ParamsError(f"{path}: size {size!r}; SAM 2 checkpoints give {{height, width}}")
        processor_path = folder / PROCESSOR_FILE
        processor = _read_json(processor_path) if processor_path.exists() else {}
        return cls(
            size=(int(size["height"]), int(size["width"])),
            target_size=int(processor.get("target_size") or size["height"]),
            image_mean=tuple(float(v) for v in config.get("image_mean", IMAGENET_MEAN)),
            image_std=tuple(float(v) for v in config.get("image_std", IMAGENET_STD)),
            rescale_factor=float(config.get("rescale_factor", 1 / 255)),
        )

    def pixel_values(self, image: np.ndarray) -> torch.Tensor:
        """RGB uint8 [H, W, 3] -> normalised model input [1, 3, height, width] (float32)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"SAM 2 expects an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
        pixels = torch.tensor(image).permute(2, 0, 1).contiguous()[None]  # a copy: the image may be read-only
        if tuple(pixels.shape[-2:]) != self.size:
            pixels = _resize_uint8_bilinear(pixels, self.size)
        mean = torch.tensor(self.image_mean) * (1.0 / self.rescale_factor)
        std = torch.tensor(self.image_std) * (1.0 / self.rescale_factor)
        return pixels.to(torch.float32).sub_(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1))

    def scale_points(self, points, original_size: tuple[int, int]) -> torch.Tensor:
        """Points [..., 2] as (x, y) in original pixels -> float32 model coordinates;
        `original_size` is (height, width)."""
        old_h, old_w = original_size
        coords = torch.as_tensor(points).clone().float()
        coords[..., 0] = coords[..., 0] * (self.target_size / old_w)
        coords[..., 1] = coords[..., 1] * (self.target_size / old_h)
        return coords

    @staticmethod
    def logits_to_original(low_res_logits: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """Mask logits [Q, C, h, w] -> logits [Q, C, H, W] at the original size (before the threshold)."""
        return F.interpolate(low_res_logits, tuple(original_size), mode="bilinear", align_corners=False)

    @staticmethod
    def masks_to_original(low_res_logits: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """Mask logits [Q, C, h, w] -> boolean masks [Q, C, H, W] at the original size."""
        return Sam2Processing.logits_to_original(low_res_logits, original_size) > MASK_THRESHOLD


def _native_uint8_bilinear() -> bool:
    """Whether torch resizes uint8 bilinearly without a float round trip on this CPU (the rule
    torchvision applies before choosing its path)."""
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") or platform.machine() in ("aarch64", "arm64")


def _resize_uint8_bilinear(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear resize of uint8 [1, C, H, W] to `size`, uint8 out."""
    if _native_uint8_bilinear():
        return F.interpolate(pixels, size=list(size), mode="bilinear", align_corners=False, antialias=True)
    resized = F.interpolate(pixels.to(torch.float32), size=list(size), mode="bilinear", align_corners=False,
                            antialias=True)
    return resized.round_().to(torch.uint8)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise InputFileError(f"{path}: missing from the SAM 2 checkpoint folder") from e
    except json.JSONDecodeError as e:
        raise ParamsError(f"{path}: not valid JSON ({e})") from e
