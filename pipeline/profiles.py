"""Model profiles as parameter overrides: what turns a params.yaml into a smoke run.

The smoke profile builds tiny random-weight models of the real architectures (no downloads)
and marks every output SMOKE. `extract.layers: auto` resolves against whatever model is loaded,
so no profile needs its own layers.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import yaml

from pipeline.params_file import load_params

SMOKE_OVERRIDES: dict[str, Any] = {
    "models.profile": "smoke",
}

# The lightest real configuration (CPU-usable): LLaVA-OneVision-0.5B + EfficientSAM ViT-T.
LIGHT_REAL_OVERRIDES: dict[str, Any] = {
    "models.profile": "real",
    "models.vlm.family": "llava_onevision",
    "models.vlm.id": "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
    "models.efficient_sam.variant": "vitt",
}


def default_params() -> dict:
    """A complete parameter dict from the dataclass defaults (the shape of params.yaml)."""
    from dataclasses import asdict

    from pipeline.attention.params import ExtractParams, VlmModelParams
    from pipeline.datasets.params import DatasetParams
    from pipeline.decoding.params import DecodeParams, SamModelParams
    from pipeline.evaluation.params import EvaluateParams
    from pipeline.sampling.params import SampleParams
    from pipeline.scaling.params import LaunchParams

    vlm = asdict(VlmModelParams())
    profile = vlm.pop("profile")
    sample = SampleParams().to_dict()
    decode = DecodeParams().to_dict()
    prompt_mode = sample.pop("prompt_mode")
    decode.pop("prompt_mode")
    return {
        "dataset": asdict(DatasetParams()),
        "models": {"profile": profile, "vlm": vlm, "efficient_sam": SamModelParams().to_dict()},
        "prompt_mode": prompt_mode,
        "extract": asdict(ExtractParams()),
        "sample": sample,
        "decode": decode,
        "evaluate": asdict(EvaluateParams()),
        "launch": asdict(LaunchParams()),
    }


def apply_overrides(params: dict, overrides: dict[str, Any]) -> dict:
    """A copy of `params` with dotted keys (`section.key[.sub]`) set; missing levels are an error."""
    out = copy.deepcopy(params)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = out
        for i, key in enumerate(parents):
            if not isinstance(node.get(key), dict):
                raise KeyError(f"parameter {dotted!r}: '{'.'.join(parents[: i + 1])}' is not a section")
            node = node[key]
        node[leaf] = copy.deepcopy(value)
    return out


def write_params(path: str | os.PathLike, params: dict) -> None:
    """Write a parameter dict as YAML (key order kept)."""
    from pipeline.atomic import write_text

    write_text(path, yaml.safe_dump(params, sort_keys=False))


def write_profile(src: str | os.PathLike, dst: str | os.PathLike, overrides: dict[str, Any]) -> dict:
    """Read `src`, apply `overrides`, write `dst`; returns the written params."""
    params = apply_overrides(load_params(src), overrides)
    write_params(dst, params)
    return params
