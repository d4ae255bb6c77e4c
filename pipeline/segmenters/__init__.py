"""The segmenter registry: family name -> `Segmenter` subclass (interface in `segmenter`).

Registering a family = adding ONE module to this package, named by the family
(`pipeline/segmenters/<family>.py`), that defines

    FAMILY = <its Segmenter subclass>      # with FAMILY.family == "<family>"

Nothing else names it: `family_names()` lists every module of this package (except `segmenter`, `params`
and names starting with '_') in sorted order, and `get_family(name)` imports that module and
returns its `FAMILY`. A family module must import heavy libraries (transformers) inside its
functions so that listing the registry stays cheap.

    from pipeline.segmenters import LoadRequest, load_segmenter
    seg = load_segmenter(LoadRequest("sam", "facebook/sam-vit-base", profile="real"))
    emb = seg.embed(rgb)                              # once per image
    out = seg.decode(emb, PromptQueries(points, labels, boxes), max_queries_per_call=64)
"""

from __future__ import annotations

import importlib
import pkgutil

from pipeline.errors import ParamsError, VlmsamError
from pipeline.segmenters.segmenter import (
    LABEL_NEGATIVE,
    LABEL_PAD,
    LABEL_POSITIVE,
    DecodedQueries,
    ImageEmbedding,
    LoadRequest,
    PromptQueries,
    RawDecoderOutput,
    Segmenter,
)

DEFAULT_FAMILY = "efficient_sam"
_NOT_FAMILIES = {"segmenter", "params"}  # the interface and the parameters, not families


class SegmenterLoadError(VlmsamError, FileNotFoundError):
    """A segmenter checkpoint that is missing, incomplete or of another family; names the id or file."""


def family_names() -> tuple[str, ...]:
    """Every registered family, sorted."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__)
                        if not m.name.startswith("_") and m.name not in _NOT_FAMILIES))


def get_family(name: str) -> type[Segmenter]:
    """The `Segmenter` subclass of family `name`; ParamsError naming models.segmenter.family otherwise."""
    if name not in family_names():
        raise ParamsError(f"models.segmenter.family {name!r}: expected one of {list(family_names())}")
    cls = importlib.import_module(f"{__name__}.{name}").FAMILY
    if cls.family != name:
        raise RuntimeError(f"pipeline.segmenters.{name}.FAMILY says family {cls.family!r}")
    return cls


def load_segmenter(request: LoadRequest) -> Segmenter:
    """The segmenter of `request.family` loaded as `request` says (see `Segmenter.load`)."""
    return get_family(request.family).load(request)


__all__ = [
    "DEFAULT_FAMILY", "LABEL_NEGATIVE", "LABEL_PAD", "LABEL_POSITIVE", "DecodedQueries", "ImageEmbedding",
    "LoadRequest", "PromptQueries", "RawDecoderOutput", "Segmenter", "SegmenterLoadError", "family_names",
    "get_family", "load_segmenter",
]
