"""The keys a parameter file may hold, at every level, and the check that rejects the others.

Top level: one mapping per section (each defined by the dataclass named here), `models` with
`profile` and one mapping per model, and the shared `prompt_mode`. Inside a section the keys are
the fields of its dataclass; the values are checked by the dataclass when a stage reads it.
"""

from __future__ import annotations

import os

from pipeline.params_file import reject_unknown_keys

SHARED_KEYS = ("prompt_mode",)  # top-level values read by several sections (sample, decode)
MODELS_SECTION = "models"
MODELS_PROFILE_KEY = "profile"


def section_classes() -> dict:
    """{top-level section: its dataclass} (`models` excluded: see `model_classes`)."""
    from pipeline.attention.params import ExtractParams
    from pipeline.datasets.params import DatasetParams
    from pipeline.decoding.params import DecodeParams
    from pipeline.evaluation.params import EvaluateParams
    from pipeline.gallery.params import GalleryParams
    from pipeline.sampling.params import SampleParams
    from pipeline.scaling.params import LaunchParams

    return {"dataset": DatasetParams, "extract": ExtractParams, "sample": SampleParams,
            "decode": DecodeParams, "evaluate": EvaluateParams, "gallery": GalleryParams,
            "launch": LaunchParams}


def model_classes() -> dict:
    """{key of the `models` section: the dataclass of that model's mapping}."""
    from pipeline.attention.params import VlmModelParams
    from pipeline.decoding.params import SAM_SECTION, SamModelParams
    from pipeline.segmenters.params import SECTION as SEGMENTER_SECTION, SegmenterParams

    return {"vlm": VlmModelParams, SEGMENTER_SECTION: SegmenterParams, SAM_SECTION: SamModelParams}


def _field_names(cls) -> list[str]:
    from dataclasses import fields

    return [f.name for f in fields(cls)]


def _check(where: str, d, known) -> None:
    if isinstance(d, dict):  # a section that is not a mapping is reported by whoever reads it
        reject_unknown_keys(where, d, known)


def check_known_keys(params: dict, path: str | os.PathLike) -> None:
    """Raise `ParamsError` naming file and key for any key of `params` that no section defines."""
    sections, models = section_classes(), model_classes()
    _check(f"{path}: top level", params, [*sections, MODELS_SECTION, *SHARED_KEYS])
    for name, cls in sections.items():
        _check(f"{path}: {name}", params.get(name), _field_names(cls))
    models_section = params.get(MODELS_SECTION)
    _check(f"{path}: {MODELS_SECTION}", models_section, [MODELS_PROFILE_KEY, *models])
    for name, cls in models.items():
        if isinstance(models_section, dict):
            _check(f"{path}: {MODELS_SECTION}.{name}", models_section.get(name), _field_names(cls))
