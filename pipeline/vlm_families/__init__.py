"""The VLM family registry: family name -> `VlmFamily` (interface in `family`).

Registering a family = adding ONE module to this package, named by the family
(`pipeline/vlm_families/<family>.py`), that defines

    FAMILY = <its VlmFamily instance>      # with FAMILY.name == "<family>"

Nothing else names it: `family_names()` lists every module of this package (except `family` and
names starting with '_', the helpers several families share) in sorted order, and
`get_family(name)` imports that module and returns its `FAMILY`. Family modules import
transformers inside their functions, so listing the registry stays cheap.

    from pipeline.vlm_families import build_smoke_vlm, family_of_config, get_family
    model, processor = build_smoke_vlm("qwen3_vl")
    family_of_config(model.config).layer_depths.fractions   # (0.5, 0.79)
"""

from __future__ import annotations

import importlib
import pkgutil

from pipeline.errors import ParamsError
from pipeline.vlm_families.family import LayerDepths, VlmFamily

DEFAULT_FAMILY = "llava_next"
_NOT_FAMILIES = {"family"}  # the interface, not a family


def family_names() -> tuple[str, ...]:
    """Every registered family, sorted."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__)
                        if not m.name.startswith("_") and m.name not in _NOT_FAMILIES))


def get_family(name: str) -> VlmFamily:
    """The `VlmFamily` of `name`; ParamsError naming models.vlm.family otherwise."""
    if name not in family_names():
        raise ParamsError(f"models.vlm.family {name!r}: expected one of {list(family_names())}")
    family = importlib.import_module(f"{__name__}.{name}").FAMILY
    if family.name != name:
        raise RuntimeError(f"pipeline.vlm_families.{name}.FAMILY says family {family.name!r}")
    return family


def all_families() -> tuple[VlmFamily, ...]:
    """Every registered family, in name order."""
    return tuple(get_family(name) for name in family_names())


def family_of_model_type(model_type: str | None) -> VlmFamily | None:
    """The family whose model classes include a checkpoint's `config.model_type`, else None."""
    for family in all_families():
        if model_type in family.model_classes:
            return family
    return None


def family_of_config(config) -> VlmFamily:
    """The family of a loaded model's config; ValueError for a model of no registered family."""
    family = family_of_model_type(getattr(config, "model_type", None))
    if family is None:
        known = sorted(t for f in all_families() for t in f.model_classes)
        raise ValueError(f"model_type {getattr(config, 'model_type', None)!r} is not a supported VLM (known: {known})")
    return family


def family_of_smoke_id(model_id: str) -> str | None:
    """The family of a smoke model id ("smoke/llava_next" -> "llava_next"), None for others."""
    for family in all_families():
        if model_id == family.smoke_id:
            return family.name
    return None


def build_smoke_vlm(family: str, seed: int = 0, attn_implementation: str = "sdpa",
                    min_pixels: int | None = None, max_pixels: int | None = None):
    """Tiny random-weight (model, processor) of the family's real classes; `model.eval()`, float32.

    Deterministic for a seed. `attn_implementation` is passed to the model (e.g. "eager" for
    reference attention weights in tests); min_pixels / max_pixels: the pixel budget of a family
    that has one (default: its own). Everything built here has random weights: a SMOKE result.
    """
    vlm_family = get_family(family)
    model, processor = vlm_family.build_smoke(seed, attn_implementation,
                                              **vlm_family.budget_kwargs(min_pixels, max_pixels))
    model.config.name_or_path = vlm_family.smoke_id
    return model, processor


__all__ = [
    "DEFAULT_FAMILY", "LayerDepths", "VlmFamily", "all_families", "build_smoke_vlm", "family_names",
    "family_of_config", "family_of_model_type", "family_of_smoke_id", "get_family",
]
