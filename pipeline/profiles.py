"""Model profiles: which models a run loads, and the overrides that turn a params.yaml into a
smoke run.

`models.profile` is `real` (checkpoints; missing ones are an error), `smoke` (tiny random-weight
models of the real architectures, no downloads, every output marked SMOKE) or `auto`: real when
every checkpoint the configuration needs is present, otherwise smoke, but only on the embedded
sample dataset (`pipeline.embedded_sample`); with any other dataset missing weights are an error.
`resolve_profile` makes that decision for every stage that loads a model, and says it in the log.
`extract.layers: auto` resolves against whatever model is loaded, so no profile needs its own layers.
"""

from __future__ import annotations

import copy
import logging
import os
from typing import Any

import yaml

from pipeline.errors import ParamsError
from pipeline.params_file import load_params

log = logging.getLogger("vlmsam.profiles")

AUTO, REAL, SMOKE = "auto", "real", "smoke"
PROFILE_CHOICES = (AUTO, REAL, SMOKE)  # what models.profile may say; AUTO resolves to one of the others

SMOKE_OVERRIDES: dict[str, Any] = {
    "models.profile": "smoke",
}


def default_params() -> dict:
    """A complete parameter dict from the dataclass defaults (the shape of params.yaml)."""
    from dataclasses import asdict

    from pipeline.attention.params import ExtractParams, VlmModelParams
    from pipeline.datasets.params import DatasetParams
    from pipeline.decoding.params import DecodeParams, SamModelParams
    from pipeline.evaluation.params import EvaluateParams
    from pipeline.gallery.params import GalleryParams
    from pipeline.sampling.params import SampleParams
    from pipeline.scaling.params import LaunchParams
    from pipeline.segmenters.params import SegmenterParams

    vlm = asdict(VlmModelParams())
    profile = vlm.pop("profile")
    sample = SampleParams().to_dict()
    decode = DecodeParams().to_dict()
    prompt_mode = sample.pop("prompt_mode")
    decode.pop("prompt_mode")
    return {
        "dataset": asdict(DatasetParams()),
        "models": {"profile": profile, "vlm": vlm, "segmenter": SegmenterParams().to_dict(),
                   "efficient_sam": SamModelParams().to_dict()},
        "prompt_mode": prompt_mode,
        "extract": asdict(ExtractParams()),
        "sample": sample,
        "decode": decode,
        "evaluate": asdict(EvaluateParams()),
        "gallery": asdict(GalleryParams()),
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


def missing_real_weights(models: dict) -> list[str]:
    """The checkpoints that the `models` section needs for a real run and that are not present,
    each as 'name (get it: ...)'."""
    from pipeline.weights import weights_status_for_models

    rows = weights_status_for_models({**models, "profile": REAL})
    return [f"{r.name} (get it: {r.get_it})" for r in rows if r.needed and not r.present]


def resolve_profile(models: dict, annotations: str | os.PathLike | None, where: str = "params") -> str:
    """'real' or 'smoke' for params.yaml's `models` section on the dataset `annotations` (None:
    no dataset, e.g. a single image); logs the decision. Raises `MissingWeightsError` when `auto`
    finds checkpoints missing for anything but the embedded sample."""
    from pipeline.embedded_sample import is_embedded_sample
    from pipeline.weights import MissingWeightsError

    requested = (models or {}).get("profile")
    if requested not in PROFILE_CHOICES:
        said = "is missing" if requested is None else f"{requested!r}"
        raise ParamsError(f"{where}: models.profile {said}: expected one of {PROFILE_CHOICES}")
    if requested == SMOKE:
        log.warning("models.profile smoke: tiny random-weight models, every output is marked SMOKE")
        return SMOKE
    if requested == REAL:
        return REAL
    missing = missing_real_weights(models)
    if not missing:
        log.info("models.profile auto: every checkpoint is present, running the real models")
        return REAL
    if is_embedded_sample(annotations):
        log.warning("models.profile auto: real checkpoints missing (%s); running the SMOKE profile on the "
                    "embedded sample (random weights, every output marked SMOKE, numbers mean nothing)",
                    "; ".join(missing))
        return SMOKE
    raise MissingWeightsError(
        f"{where}: models.profile auto needs real checkpoints for {annotations or 'a single image'} (smoke runs are chosen "
        f"automatically only for the embedded sample); missing: {'; '.join(missing)}. "
        "See `vlmsam weights`, or set models.profile: smoke for a smoke run")


def with_resolved_profile(models: dict, annotations: str | os.PathLike | None, where: str = "params") -> dict:
    """A copy of the `models` section with `profile` resolved by `resolve_profile`."""
    return {**models, "profile": resolve_profile(models, annotations, where)}
