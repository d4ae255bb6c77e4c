"""Model loading is offline unless `models.vlm.allow_download` is true: no socket is opened,
every `from_pretrained` gets local_files_only=True, and a missing model fails at once with the
`vlmsam weights` hint. A typo in `models.profile` is an error naming the allowed values."""

import shutil
import socket
import time

import pytest
import transformers

from pipeline.attention.params import PROFILES, VlmModelParams
from pipeline.attention.vlm import VlmNotAvailableError, load_vlm
from pipeline.decoding.params import sam_models_from_section

MISSING_ID = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"


@pytest.fixture
def no_network(monkeypatch):
    """Every attempt to resolve a host or open a connection is recorded and refused."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return attempts


def test_allow_download_defaults_off():
    assert VlmModelParams().allow_download is False
    with pytest.raises(ValueError, match="models.vlm.allow_download must be true or false"):
        VlmModelParams(allow_download="yes")


def test_missing_model_fails_at_once_without_network(tmp_path, no_network):
    start = time.perf_counter()
    with pytest.raises(VlmNotAvailableError) as err:
        load_vlm(VlmModelParams(id=MISSING_ID, cache_dir=str(tmp_path), device="cpu"))
    elapsed = time.perf_counter() - start
    msg = str(err.value)
    assert no_network == []  # not even a DNS lookup
    assert "vlmsam weights" in msg and f"hf download {MISSING_ID}" in msg
    assert "models.vlm.allow_download is false" in msg
    assert elapsed < 2.0  # generous: a hub retry loop takes tens of seconds


def _cache_with_config_only(cache, shared_reference):
    """A hub cache entry of MISSING_ID holding only its real config.json (no processor, no weights)."""
    snap = cache / f"models--{MISSING_ID.replace('/', '--')}" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    shutil.copy(shared_reference / "llava_hf" / MISSING_ID.split("/")[1] / "config.json", snap / "config.json")
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("0" * 40)


def test_every_from_pretrained_is_local_only_unless_allowed(tmp_path, monkeypatch, no_network, shared_reference):
    seen = []

    def fake_config(model_id, **kwargs):
        seen.append(kwargs.get("local_files_only"))
        raise OSError("not here")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", fake_config)
    for allow in (False, True):  # not in the cache: without downloads transformers is not even asked
        with pytest.raises(VlmNotAvailableError):
            load_vlm(VlmModelParams(id=MISSING_ID, cache_dir=str(tmp_path), device="cpu", allow_download=allow))
    assert seen == [False]
    # HF_HUB_OFFLINE wins over allow_download
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(VlmNotAvailableError, match="HF_HUB_OFFLINE is set"):
        load_vlm(VlmModelParams(id=MISSING_ID, cache_dir=str(tmp_path), device="cpu", allow_download=True))
    assert seen == [False]


def test_cached_config_without_weights_loads_local_only(tmp_path, no_network, shared_reference, monkeypatch):
    _cache_with_config_only(tmp_path, shared_reference)
    seen = []
    real = transformers.AutoConfig.from_pretrained.__func__

    def spy(cls, model_id, **kwargs):
        seen.append(kwargs.get("local_files_only"))
        return real(cls, model_id, **kwargs)

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", classmethod(spy))
    with pytest.raises(VlmNotAvailableError, match="vlmsam weights"):
        load_vlm(VlmModelParams(id=MISSING_ID, cache_dir=str(tmp_path), device="cpu"))
    assert seen == [True] and no_network == []


def test_empty_local_folder_names_the_weights_command(tmp_path, no_network):
    with pytest.raises(VlmNotAvailableError, match="vlmsam weights"):
        load_vlm(VlmModelParams(id=str(tmp_path), device="cpu"))
    assert no_network == []


@pytest.mark.parametrize("typo", ["reel", "Real", "smok"])
def test_profile_typo_names_the_allowed_values(typo, no_network):
    models = {"profile": typo, "vlm": {"id": MISSING_ID}, "efficient_sam": {}}
    with pytest.raises(ValueError) as vlm_err:
        VlmModelParams.from_models_section(models)
    with pytest.raises(ValueError) as sam_err:
        sam_models_from_section(models)
    for err in (vlm_err, sam_err):
        assert repr(typo) in str(err.value) and all(p in str(err.value) for p in PROFILES)
    assert no_network == []
