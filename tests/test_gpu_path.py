"""Device and dtype choices of the GPU path, checked on CPU with CUDA availability mocked, and the
real loading code path (transformers' device_map through accelerate) on a checkpoint folder."""

import tomllib
from pathlib import Path

import pytest
import torch

from pipeline.attention import vlm as V
from pipeline.attention.capture import device_tensor, rows_to_host
from pipeline.attention.params import VlmModelParams
from pipeline.vlm_families import build_smoke_vlm
from pipeline.decoding.params import DecodeParams, SamModelParams
from pipeline.decoding.sam import load_sam_models
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cuda_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_is_cuda_in_bf16_when_a_gpu_is_there(cuda_available):
    device = V.resolve_device("auto")
    assert device == "cuda" and V.resolve_dtype("auto", device) == torch.bfloat16
    assert V.resolve_device("cuda:1") == "cuda:1"


def test_auto_is_cpu_in_fp32_without_a_gpu(no_cuda):
    device = V.resolve_device("auto")
    assert device == "cpu" and V.resolve_dtype("auto", device) == torch.float32
    with pytest.raises(RuntimeError, match="no CUDA device is available"):
        V.resolve_device("cuda")


def test_decode_device_defaults_to_auto_and_follows_cuda(no_cuda, monkeypatch):
    assert DecodeParams().device == "auto"
    with pytest.raises(ValueError, match="decode.device must be"):
        DecodeParams(device="gpu")
    models = load_sam_models("smoke", SamModelParams(), False, DecodeParams().device)
    assert next(models.model.parameters()).device.type == "cpu"
    # with a GPU, 'auto' sends EfficientSAM to CUDA (the move itself is recorded, not run)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    moved = []
    from pipeline.models.efficient_sam import EfficientSam

    monkeypatch.setattr(EfficientSam, "to", lambda self, device: moved.append(device) or self)
    load_sam_models("smoke", SamModelParams(), False, "auto")
    assert moved == ["cuda"]


def test_real_loading_asks_transformers_for_cuda_bf16_sdpa(cuda_available, tmp_path, monkeypatch):
    import transformers as tf

    model, processor = build_smoke_vlm("llava_next")
    folder = tmp_path / "ckpt"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    seen = {}

    def fake_from_pretrained(cls, path, **kwargs):
        seen.update(kwargs)
        return model

    monkeypatch.setattr(tf.LlavaNextForConditionalGeneration, "from_pretrained", classmethod(fake_from_pretrained))
    loaded = V.load_vlm(VlmModelParams(id=str(folder)))
    assert seen["device_map"] == "cuda" and seen["dtype"] == torch.bfloat16
    assert seen["attn_implementation"] == "sdpa" and loaded.family == "llava_next" and not loaded.smoke


def test_real_loading_runs_through_device_map(no_cuda, tmp_path):
    import accelerate  # noqa: F401  (transformers refuses device_map without it)

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.split()[0].startswith("accelerate") for d in deps)
    model, processor = build_smoke_vlm("llava_next")
    folder = tmp_path / "ckpt"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    loaded = V.load_vlm(VlmModelParams(id=str(folder), device="auto"))
    assert loaded.model.device.type == "cpu" and loaded.model.dtype == torch.float32
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(input_ids=ids).logits, model(input_ids=ids).logits)


def test_captured_rows_come_back_in_fp32_in_one_piece():
    captured = [{3: torch.rand(4, 2, 7, dtype=torch.bfloat16), 5: torch.rand(4, 2, 7)},
                {3: torch.rand(4, 1, 9), 5: torch.rand(4, 1, 9, dtype=torch.float16)}]
    host = rows_to_host(captured)
    for before, after in zip(captured, host):
        assert list(after) == list(before)
        for layer in before:
            assert after[layer].dtype == torch.float32 and after[layer].shape == before[layer].shape
            torch.testing.assert_close(after[layer], before[layer].float(), rtol=0, atol=0)
    assert device_tensor([4, 1], "cpu").tolist() == [4, 1] and device_tensor([4], "cpu").dtype == torch.long
