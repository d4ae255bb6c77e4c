"""params.yaml holds every knob, each valid for the dataclass that defines it."""

from pathlib import Path

import pytest
import yaml

from pipeline.attention.params import ExtractParams, VlmModelParams
from pipeline.datasets.params import DatasetParams
from pipeline.decoding.params import DecodeParams, sam_models_from_section
from pipeline.errors import ParamsError
from pipeline.evaluation.params import EvaluateParams
from pipeline.params_file import load_params, section, with_shared
from pipeline.profiles import PROFILE_CHOICES, SMOKE_OVERRIDES, apply_overrides, default_params
from pipeline.sampling.params import SampleParams
from pipeline.scaling.params import LaunchParams

REPO = Path(__file__).resolve().parents[1]


def _keys(d: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in d.items():
        out.add(prefix + k)
        if isinstance(v, dict) and k not in ("templates", "phrase_overrides"):
            out |= _keys(v, prefix + k + ".")
    return out


def test_params_yaml_has_every_parameter_and_parses():
    params = load_params(REPO / "params.yaml")
    assert _keys(params) == _keys(default_params())
    DatasetParams.from_dict(section(params, "dataset"))
    assert params["models"]["profile"] in PROFILE_CHOICES
    resolved = {**section(params, "models"), "profile": "real"}  # what `auto` becomes with the weights present
    VlmModelParams.from_models_section(resolved)
    sam_models_from_section(resolved)
    ExtractParams.from_dict(section(params, "extract"))
    SampleParams.from_dict(section(params, "sample"), params["prompt_mode"])
    DecodeParams.from_dict(section(params, "decode"), params["prompt_mode"])
    EvaluateParams.from_dict(section(params, "evaluate"))
    LaunchParams.from_dict(section(params, "launch"))


def test_overrides_and_errors(tmp_path):
    smoke = apply_overrides(default_params(), SMOKE_OVERRIDES)
    assert smoke["models"]["profile"] == "smoke" and default_params()["models"]["profile"] == "real"
    with pytest.raises(KeyError, match="'nosuch' is not a section"):
        apply_overrides(default_params(), {"nosuch.key": 1})
    with pytest.raises(ValueError, match="contradicts the top-level prompt_mode"):
        with_shared({"prompt_mode": "box"}, "prompt_mode", "points", "sample")
    with pytest.raises(ValueError, match="sample: unknown parameter"):
        SampleParams.from_dict({"n_points": 3})
    bad = tmp_path / "params.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        load_params(bad)
    with pytest.raises(FileNotFoundError, match="parameter file not found"):
        load_params(tmp_path / "missing.yaml")
    with pytest.raises(ParamsError, match="section .sample. is missing"):
        section(yaml.safe_load("dataset: {}"), "sample")
