"""Reading state dicts from checkpoint files (.pt/.pth via torch weights_only, .safetensors) with clear errors."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import VlmsamError

TORCH_SUFFIXES = (".pt", ".pth")
SAFETENSORS_SUFFIX = ".safetensors"


class CheckpointError(VlmsamError, ValueError):
    """A checkpoint file that is missing, unreadable, or does not fit the model; the message names the file."""


def read_state_dict(path: str | os.PathLike, wrappers: tuple[str, ...] = ("model",)) -> dict[str, torch.Tensor]:
    """The state dict stored in `path`.

    `.pt`/`.pth`: `torch.load(map_location="cpu", weights_only=True)`; either a bare state dict or
    one wrapped as `{key: state_dict}` for a key of `wrappers` (the official `{"model": ...}`).
    `.safetensors`: a flat tensor file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    if suffix not in TORCH_SUFFIXES:
        raise CheckpointError(f"{path}: unknown checkpoint format (expected .pt, .pth or .safetensors)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot be loaded with torch.load(weights_only=True) ({e})") from e
    for key in wrappers:
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        wrapped = " or ".join(f"{{'{k}': state_dict}}" for k in wrappers)
        raise CheckpointError(f"{path}: expected a state dict of tensors (or {wrapped})")
    return dict(obj)


def load_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str | os.PathLike) -> None:
    """`module.load_state_dict(strict=True)` after checking keys and shapes; errors name `source`."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: state dict does not fit {type(module).__name__}: "
            f"{len(missing)} missing keys {_preview(missing)}, {len(unexpected)} unexpected keys {_preview(unexpected)}"
        )
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise CheckpointError(f"{source}: {len(wrong)} tensors have the wrong shape: {_preview(wrong)}")
    module.load_state_dict(state_dict, strict=True)


def _preview(items: list[str], n: int = 5) -> str:
    shown = ", ".join(items[:n])
    return f"[{shown}{', …' if len(items) > n else ''}]"
