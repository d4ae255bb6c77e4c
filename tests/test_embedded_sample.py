"""The embedded sample dataset (the default of params.yaml) and `models.profile: auto`."""

from __future__ import annotations

import logging

import pytest

import pipeline.profiles as profiles
from pipeline.datasets import load_dataset
from pipeline.embedded_sample import SAMPLE_ANNOTATIONS, SAMPLE_DIR, is_embedded_sample, write_sample
from pipeline.errors import ParamsError
from pipeline.params_file import load_params
from pipeline.profiles import resolve_profile
from pipeline.weights import MissingWeightsError

MODELS = {"profile": "auto", "vlm": {}, "efficient_sam": {"variant": "vitt"}}


def test_sample_is_small_valid_and_what_the_generator_makes(tmp_path):
    size = sum(p.stat().st_size for p in SAMPLE_DIR.rglob("*") if p.is_file())
    assert size < 500_000
    dataset = load_dataset(SAMPLE_ANNOTATIONS, flavour="d2sa", image_dir=SAMPLE_DIR)
    assert len(dataset.images) >= 3 and dataset.instance_count() >= 10
    regenerated = write_sample(tmp_path, progress=False)
    assert regenerated.read_bytes() == SAMPLE_ANNOTATIONS.read_bytes()
    for image in (SAMPLE_DIR / "images").iterdir():
        assert (tmp_path / "images" / image.name).read_bytes() == image.read_bytes()


def test_params_yaml_defaults_to_the_sample_with_profile_auto(monkeypatch):
    monkeypatch.chdir(SAMPLE_DIR.parents[1])
    params = load_params("params.yaml")
    assert params["models"]["profile"] == "auto"
    assert is_embedded_sample(params["dataset"]["annotations"])
    assert load_dataset(params["dataset"]["annotations"], image_dir=params["dataset"]["images"]).instance_count() > 0


def test_auto_is_smoke_only_on_the_embedded_sample(monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(profiles, "missing_real_weights", lambda models: ["EfficientSAM vitt (get it: url)"])
    with caplog.at_level(logging.WARNING, logger="vlmsam.profiles"):
        assert resolve_profile(MODELS, SAMPLE_ANNOTATIONS) == "smoke"
    assert "running the SMOKE profile on the embedded sample" in caplog.text and "EfficientSAM vitt" in caplog.text
    other = tmp_path / "D2S_amodal_validation.json"
    with pytest.raises(MissingWeightsError, match=f"auto needs real checkpoints for {other}.*EfficientSAM vitt"):
        resolve_profile(MODELS, other)
    with pytest.raises(MissingWeightsError, match="a single image"):
        resolve_profile(MODELS, None)
    assert resolve_profile({**MODELS, "profile": "smoke"}, other) == "smoke"
    assert resolve_profile({**MODELS, "profile": "real"}, SAMPLE_ANNOTATIONS) == "real"


def test_auto_is_real_when_every_checkpoint_is_present(monkeypatch, tmp_path):
    monkeypatch.setattr(profiles, "missing_real_weights", lambda models: [])
    assert resolve_profile(MODELS, SAMPLE_ANNOTATIONS) == "real"
    assert resolve_profile(MODELS, tmp_path / "other.json") == "real"


def test_missing_real_weights_names_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("VLMSAM_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr("pipeline.weights.PROJECT_WEIGHTS_DIR", tmp_path / "weights")
    missing = profiles.missing_real_weights({**MODELS, "vlm": {"cache_dir": str(tmp_path / "hub")}})
    assert [m.split(" (")[0] for m in missing] == ["EfficientSAM vitt", "VLM llava-hf/llava-v1.6-mistral-7b-hf"]


def test_a_profile_typo_is_a_params_error():
    with pytest.raises(ParamsError, match=r"models.profile 'atuo': expected one of \('auto', 'real', 'smoke'\)"):
        resolve_profile({**MODELS, "profile": "atuo"}, SAMPLE_ANNOTATIONS)
