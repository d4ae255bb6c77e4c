"""Sharded extract and decode with the real launchers on CPU (smoke models, 3 synthetic
images): the merged outputs are byte-identical to a single-process run, whatever the number
of processes (torchrun, accelerate, a simulated SLURM array with more shards than images), and
a killed rank resumes alone.

Every process here computes with one CPU thread (torchrun's default per process): CPU matrix
products round differently with other thread counts, in one process as in several."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.profiles import SMOKE_OVERRIDES, write_profile
from pipeline.synth import generate
from test_extract_resume import _PAUSING_RUNNER  # the stage, paused inside its 2nd image's part

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OUTPUTS = ("attention.h5", "pred_visible.json", "pred_amodal.json")


def _env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "LOCAL_RANK"))}
    return {**env, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}


def _run(args: list[str], cwd: Path) -> str:
    proc = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stderr


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The in-process runs use one thread, as the launched processes do."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """Smoke params on 3 scenes, and the single-process outputs of extract -> sample -> decode
    (in this process) under reference/."""
    root = tmp_path_factory.mktemp("scaling")
    ann = generate(root / "synth", 3, seed=2, width=160, height=120, mean_instances=2.0, max_instances=3,
                   progress=False)
    write_profile(REPO / "params.yaml", root / "params.yaml", {
        **SMOKE_OVERRIDES, "dataset.annotations": str(ann), "dataset.images": None,
        "extract.max_new_tokens": 3, "decode.occluders": "vlm",
    })
    cwd = Path.cwd()
    os.chdir(root)
    try:
        from stages import decode, extract, sample

        extract.run_stage("params.yaml", "cache/attention.h5", progress=False)
        sample.run_stage("params.yaml", progress=False)
        decode.main(["--params", "params.yaml"])
    finally:
        os.chdir(cwd)
    (root / "reference").mkdir()
    for name in OUTPUTS:
        shutil.copy(root / "cache" / name, root / "reference" / name)
    assert not list((root / "cache").glob("*.parts"))
    return root


def _copy(project: Path, dst: Path, *inputs: str) -> Path:
    """A run folder with the params and the given stage inputs of the reference run."""
    (dst / "cache").mkdir(parents=True)
    shutil.copy(project / "params.yaml", dst / "params.yaml")
    for name in inputs:
        shutil.copy(project / "cache" / name, dst / "cache" / name)
    return dst


def _same_bytes(run: Path, project: Path, *names: str) -> None:
    for name in names:
        assert (run / "cache" / name).read_bytes() == (project / "reference" / name).read_bytes(), name
    assert not list((run / "cache").glob("*.parts")), "parts left behind"


def test_extract_torchrun_two_processes_is_byte_identical(project, tmp_path):
    run = _copy(project, tmp_path / "run")
    log = _run([str(BIN / "torchrun"), "--nproc_per_node", "2", "-m", "stages.extract", "--params", "params.yaml",
                "--out", "cache/attention.h5"], run)
    assert "shard 1/2" in log and "shard 2/2" in log and log.count("merging cache/attention.h5") == 1
    _same_bytes(run, project, "attention.h5")


def test_decode_accelerate_two_processes_is_byte_identical(project, tmp_path):
    run = _copy(project, tmp_path / "run", "attention.h5", "points.parquet")
    # the DVC command: stages.launch runs the stage under params.yaml's launcher
    params = run / "params.yaml"
    params.write_text(params.read_text().replace(
        "launcher: null", f"launcher: {BIN / 'accelerate'} launch --multi_gpu --num_processes 2 --num_machines 1 "
                          "--mixed_precision no --dynamo_backend no"))
    log = _run([sys.executable, "-m", "stages.launch", "decode", "--params", "params.yaml"], run)
    assert "shard 1/2" in log and "shard 2/2" in log
    _same_bytes(run, project, "pred_visible.json", "pred_amodal.json")


def test_slurm_array_with_more_tasks_than_images(project, tmp_path, monkeypatch):
    """4 array tasks for 3 images, one after the other as a throttled array may run them, the
    task without an image first. Extract: the cache appears when the last image's task
    finishes. Decode: another process holds the merge lock then, so the last task leaves the
    parts and `vlmsam merge decode` writes the files. Both give the single-process bytes."""
    from typer.testing import CliRunner

    from pipeline.cli import app
    from stages import decode, extract

    run = _copy(project, tmp_path / "run", "points.parquet")
    monkeypatch.chdir(run)
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "0")
    order = [3, 0, 1, 2]  # 3 shards of one image each, shard 3 has none
    for task in order:
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(task))
        assert not (run / "cache" / "attention.h5").exists()
        extract.run_stage("params.yaml", "cache/attention.h5", progress=False)
    _same_bytes(run, project, "attention.h5")

    for task in order[:-1]:
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(task))
        assert decode.main(["--params", "params.yaml"]).decoded_images == (task != 3)
    (run_dir,) = (run / "cache" / "pred_visible.json.parts").iterdir()
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(order[-1]))
    with open(run_dir / ".merge.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        summary = decode.main(["--params", "params.yaml"])
        assert summary.n_visible is None and summary.decoded_images == 1
        assert not (run / "cache" / "pred_visible.json").exists()
        busy = CliRunner().invoke(app, ["merge", "decode", "--params", "params.yaml"])
        assert busy.exit_code == 1 and "another process is merging" in busy.output
    merged = CliRunner().invoke(app, ["merge", "decode", "--params", "params.yaml"])
    assert merged.exit_code == 0, merged.output
    _same_bytes(run, project, "pred_visible.json", "pred_amodal.json")
    again = CliRunner().invoke(app, ["merge", "decode", "--params", "params.yaml"])
    assert again.exit_code == 1 and "parts of one decode run, found 0" in again.output


def test_killed_rank_resumes_alone(project, tmp_path, monkeypatch, caplog):
    from pipeline.datasets import load_dataset
    from pipeline.params_file import load_params
    from pipeline.scaling.shards import Shard, shard_image_ids
    from stages.extract import run_stage

    run = _copy(project, tmp_path / "run")
    images = load_dataset(load_params(run / "params.yaml")["dataset"]["annotations"]).images
    killed = next(k for k in range(2) if len(shard_image_ids(images, Shard(k, 2))) == 2)
    args = ["--params", "params.yaml", "--out", "cache/attention.h5", "--num-shards", "2", "--shard-index", str(killed)]
    proc = subprocess.Popen([sys.executable, "-c", _PAUSING_RUNNER, *args], cwd=run, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "PAUSED", proc.stderr.read()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    parts = run / "cache" / "attention.h5.parts"
    assert len(list(parts.glob("*.h5"))) == 1 and any(p.name.endswith(".tmp") for p in parts.iterdir())

    monkeypatch.chdir(run)
    run_stage("params.yaml", "cache/attention.h5", progress=False, num_shards=2, shard_index=1 - killed)
    assert not (run / "cache" / "attention.h5").exists()  # the killed shard's image is missing
    assert len(list(parts.glob("*.h5"))) == 2

    with caplog.at_level(logging.INFO):
        run_stage("params.yaml", "cache/attention.h5", progress=False, num_shards=2, shard_index=killed)
    assert "resuming: 1 of 2 images already extracted" in caplog.text
    _same_bytes(run, project, "attention.h5")
