"""Mistakes a new user makes, each ending in one line naming the parameter or file: layers the
model does not have, a launcher that does not exist or asks for no processes, and image files
changed under an attention cache (the resume key holds the images' identity)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.attention import extract as X
from pipeline.attention.cache import read_info
from pipeline.attention.params import ExtractParams, VlmModelParams
from pipeline.attention.vlm import load_vlm
from pipeline.datasets import load_dataset
from pipeline.errors import ParamsError
from pipeline.synth import generate

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    return generate(out, 2, seed=3, width=96, height=72, mean_instances=1.5, max_instances=2, progress=False)


def _run(module: str, params: dict, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    env = {k: v for k, v in os.environ.items() if k != "VLMSAM_DEBUG"}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", module, *args, "--params", str(path)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_layer_beyond_the_model_is_one_line_naming_extract_layers(synth, tmp_path):
    params = {"dataset": {"annotations": str(synth), "flavour": "d2sa"},
              "models": {"profile": "smoke", "vlm": {"family": "llava"}},
              "extract": {"layers": [100], "max_new_tokens": 2}}
    line = _one_error_line(_run("stages.extract", params, tmp_path, "--out", str(tmp_path / "a.h5")))
    assert "extract.layers: layer 100 is out of range for a language model with 3 layers" in line
    assert not (tmp_path / "a.h5").exists()


@pytest.mark.parametrize("launcher, expected", [
    ("no-such-launcher-9f2 --nproc_per_node 2", "launch.launcher: program 'no-such-launcher-9f2' cannot be "
                                                 "started (No such file or directory)"),
    ("torchrun --nproc_per_node 0", "--nproc_per_node must be a positive number of processes, got '0'"),
    ("torchrun --nproc-per-node=0", "--nproc-per-node must be a positive number of processes, got '0'"),
    ("accelerate launch --num_processes 0", "--num_processes must be a positive number of processes, got '0'"),
])
def test_bad_launcher_is_one_line_naming_launch_launcher(tmp_path, launcher, expected):
    line = _one_error_line(_run("stages.launch", {"launch": {"launcher": launcher}}, tmp_path, "extract"))
    assert "launch.launcher" in line and expected in line


def test_launcher_words_torchrun_accepts_pass():
    from pipeline.scaling.params import LaunchParams

    for launcher in ("torchrun --nproc_per_node gpu", "torchrun --nproc_per_node=8", "srun python"):
        assert LaunchParams(launcher).launcher == launcher
    with pytest.raises(ParamsError, match="got ''"):
        LaunchParams("torchrun --nproc_per_node")


@pytest.fixture(scope="module")
def vlm():
    return load_vlm(VlmModelParams(profile="smoke", family="llava", device="cpu"))


def test_changed_images_are_not_up_to_date(synth, tmp_path, vlm, monkeypatch):
    params = ExtractParams(layers=[-1], max_new_tokens=2, ask_occlusion=False, sink_removal=False)
    dataset = load_dataset(synth)
    out = X.run_extract(vlm, dataset, params, tmp_path / "a.h5", progress=False)
    identity = read_info(out).params["dataset"]["image_files"]
    assert identity["count"] == len(dataset.images)
    calls = []
    extract_image = X.extract_image
    monkeypatch.setattr(X, "extract_image", lambda *a, **k: calls.append(1) or extract_image(*a, **k))
    X.run_extract(vlm, dataset, params, out, progress=False)
    assert calls == []  # same images: up to date

    # another images folder holding copies of the same files (dataset.images changed)
    other = tmp_path / "copies"
    for im in dataset.images:
        copy = other / im.path.relative_to(synth.parent)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(im.path, copy)
    moved = load_dataset(synth, image_dir=other)
    X.run_extract(vlm, moved, params, out, progress=False)
    assert len(calls) == len(dataset.images)
    assert read_info(out).params["dataset"]["image_files"] != identity

    # one file replaced in place (new content, new modification time)
    calls.clear()
    first = moved.images[0].path
    data = first.read_bytes()
    first.write_bytes(data)
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 10**9))
    X.run_extract(vlm, moved, params, out, progress=False)
    assert len(calls) == len(dataset.images)
