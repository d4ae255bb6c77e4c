"""Loading VLMs: local folder, Hugging Face cache (offline) with its revision, smoke profile,
and the clear error for a checkpoint that is not there."""

import pytest
import torch

from pipeline.attention.params import VlmModelParams
from pipeline.vlm_families import build_smoke_vlm
from pipeline.attention.vlm import VlmNotAvailableError, load_vlm

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def saved_onevision(tmp_path_factory):
    """A smoke OneVision checkpoint laid out as a hub cache entry and as a plain folder."""
    model, processor = build_smoke_vlm("llava_onevision", seed=3)
    cache = tmp_path_factory.mktemp("hub")
    repo = cache / "models--vlmsam--tiny-onevision"
    snap = repo / "snapshots" / COMMIT
    model.save_pretrained(snap)
    processor.save_pretrained(snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return cache, snap, model


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_load_from_offline_hub_cache_records_revision(saved_onevision, monkeypatch):
    cache, _, reference = saved_onevision
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    vlm = load_vlm(VlmModelParams(id="vlmsam/tiny-onevision", cache_dir=str(cache), device="cpu"))
    assert vlm.family == "llava_onevision" and not vlm.smoke
    assert vlm.revision == COMMIT and vlm.model_id == "vlmsam/tiny-onevision"
    assert type(vlm.model).__name__ == "LlavaOnevisionForConditionalGeneration"
    assert type(vlm.processor.image_processor).__name__.endswith("Pil")
    assert vlm.processor.chat_template is not None
    assert vlm.model.dtype == torch.float32 and not vlm.model.training
    assert _same_weights(vlm.model, reference)


def test_load_from_local_folder(saved_onevision):
    _, snap, reference = saved_onevision
    vlm = load_vlm(VlmModelParams(id=str(snap), device="cpu", dtype="bfloat16"))
    assert vlm.family == "llava_onevision" and vlm.revision == COMMIT  # folder is a cache snapshot
    assert vlm.model.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="family is 'llava' but the checkpoint is 'llava_onevision'"):
        load_vlm(VlmModelParams(id=str(snap), family="llava", device="cpu"))


@pytest.mark.parametrize("family", ["llava", "llava_next"])
def test_load_other_families_from_folder(tmp_path, family):
    model, processor = build_smoke_vlm(family)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    vlm = load_vlm(VlmModelParams(id=str(tmp_path), device="cpu"))
    assert vlm.family == family and vlm.revision == ""
    assert type(vlm.processor).__name__ == type(processor).__name__
    assert _same_weights(vlm.model, model)


def test_missing_model_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(VlmNotAvailableError) as err:
        load_vlm(VlmModelParams(id="llava-hf/llava-onevision-qwen2-0.5b-ov-hf", cache_dir=str(tmp_path), device="cpu"))
    msg = str(err.value)
    assert "hf download llava-hf/llava-onevision-qwen2-0.5b-ov-hf" in msg
    assert "models--llava-hf--llava-onevision-qwen2-0.5b-ov-hf" in msg and str(tmp_path) in msg
    assert "HF_HUB_OFFLINE is set" in msg


def test_smoke_profile(caplog):
    with caplog.at_level("WARNING"):
        vlm = load_vlm(VlmModelParams(profile="smoke", family="llava_next", device="cpu"))
    assert vlm.smoke and vlm.model_id == "smoke/llava_next" and vlm.family == "llava_next"
    assert "SMOKE run: random weights" in caplog.text
    # the family of a known default id is enough
    assert load_vlm(VlmModelParams(profile="smoke", id="llava-hf/llava-1.5-7b-hf", device="cpu")).family == "llava"
    with pytest.raises(ValueError, match="family is unknown"):
        load_vlm(VlmModelParams(profile="smoke", id="someone/else", device="cpu"))
