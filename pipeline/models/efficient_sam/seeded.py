"""Seeded random EfficientSAM weights (the reference data's recipe), for smoke runs and the golden test.

Every tensor of the state dict, in plain string order of the keys, is drawn from one generator:
4-D weights scaled by 1/sqrt(fan-in of a kernel), ≥2-D by 1/sqrt(last dim), 1-D `.weight` = 1 + 0.1·N,
other 1-D = 0.1·N. The result is a deterministic but UNTRAINED model: outputs are a SMOKE run.
"""

from __future__ import annotations

import math

import torch

from pipeline.models.efficient_sam.model import EfficientSam, build_efficient_sam

SEED = 20261124


def seeded_state_dict(shapes: dict[str, list[int] | tuple[int, ...]], seed: int = SEED) -> dict[str, torch.Tensor]:
    """Random tensors for `shapes` ({key: shape}) following the recipe above."""
    generator = torch.Generator().manual_seed(seed)
    state_dict = {}
    for key in sorted(shapes):
        shape = list(shapes[key])
        t = torch.randn(shape, generator=generator, dtype=torch.float32)
        if len(shape) == 4:
            t = t / math.prod(shape[1:]) ** 0.5
        elif len(shape) >= 2:
            t = t / shape[-1] ** 0.5
        elif key.endswith(".weight"):
            t = 1.0 + 0.1 * t
        else:
            t = 0.1 * t
        state_dict[key] = t
    return state_dict


def build_seeded_efficient_sam(variant: str, seed: int = SEED) -> EfficientSam:
    """EfficientSAM `variant` with seeded random weights (strict load), eval mode. SMOKE only."""
    model = build_efficient_sam(variant)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(seeded_state_dict(shapes, seed), strict=True)
    return model.eval()
