"""benchmarks/gpu_check.py on a machine without CUDA: the "no CUDA" exit, the 7B construction
(on the meta device: bf16, no weights materialised), and the --tiny dry run of every measurement."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_without_cuda_it_says_so_and_exits_0(gpu_check, no_cuda, tmp_path, capsys):
    out = tmp_path / "gpu.json"
    assert gpu_check.main(["--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == gpu_check.NO_CUDA_LINE
    assert "no CUDA" in gpu_check.NO_CUDA_LINE and not out.exists()


def test_the_7b_model_is_built_in_bf16_without_materialising_weights(gpu_check, shared_reference):
    assert gpu_check.REFERENCE.is_relative_to(shared_reference)
    vlm = gpu_check.build_vlm(False, "meta")
    params = list(vlm.model.parameters())
    assert {p.device.type for p in params} == {"meta"} and {p.dtype for p in params} == {torch.bfloat16}
    assert 7.4e9 < sum(p.numel() for p in params) < 7.7e9
    assert vlm.model.config.get_text_config().num_hidden_layers == 32 and vlm.smoke
    assert vlm.model.generation_config.pad_token_id is not None


def test_sam2_large_is_built_at_the_real_widths(gpu_check):
    """facebook/sam2.1-hiera-large's image model (224.4M parameters published, of which the video
    memory modules, not in Sam2Model, take about 7.5M), on the meta device."""
    seg = gpu_check.build_sam2(False, "meta")
    hiera = seg.model.config.vision_config.backbone_config
    assert hiera.embed_dim_per_stage == [144, 288, 576, 1152] and hiera.blocks_per_stage == [2, 6, 36, 4]
    assert 216e6 < sum(p.numel() for p in seg.model.parameters()) < 218e6
    assert seg.smoke and seg.provenance["id"] == "random/facebook/sam2.1-hiera-large"
    assert seg.image_processor.size == (1024, 1024)


def test_budget_spent_skips_parts_and_still_writes(gpu_check, no_cuda, tmp_path):
    out = tmp_path / "gpu.json"
    assert gpu_check.main(["--tiny", "--budget-s", "0", "--images", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [s.split(":")[0] for s in data["skipped"]] == ["stages", "capture", "reuse", "decode", "sam2", "generation"]
    assert "RANDOM-WEIGHT TIMING" in data["label"]


@pytest.mark.slow
def test_tiny_dry_run_measures_everything(gpu_check, no_cuda, tmp_path):
    out = tmp_path / "gpu.json"
    argv = ["--tiny", "--images", "1", "--gen-images", "2", "--reps", "1", "--out", str(out)]
    assert gpu_check.main(argv) == 0
    data = json.loads(out.read_text())
    assert data["device"] == "cpu" and data["skipped"] == []
    figures = data["figures"]
    assert all(f["label"] == gpu_check.LABEL for f in figures.values())
    for stage in ("extract", "sample", "decode_vitt", "evaluate"):
        assert figures[f"stage {stage}: images/s"]["value"] > 0
        assert figures[f"stage {stage}: projected on D2SA val (3600 images)"]["unit"] == "min"
    for ratio in ("capture: time capture / plain", "reuse: later instance / first", "decode vitt: 16 / 1 instances",
                  "sam2: decode 16 / 1 queries",
                  "generation: one at a time / batched"):
        assert figures[ratio]["value"] > 0 and figures[ratio]["unit"] == "x"
    assert figures["memory: GPU peak overall"]["value"] is None  # no GPU memory on CPU
    assert data["info"]["generation_answers_equal"] is True and data["info"]["generation_images"] >= 1
