"""Shard detection from launcher environments, the balanced assignment, GPU pinning, and the
launcher parameter of the DVC command."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from pipeline.scaling.params import LaunchParams
from pipeline.scaling.process import pin_local_gpu
from pipeline.scaling.shards import Shard, ShardError, assign_shards, detect_shard, image_weight, shard_image_ids


def test_single_process_without_launcher():
    assert detect_shard(env={}) == Shard(0, 1, None, "single process")


def test_torchrun_and_accelerate_ranks():
    s = detect_shard(env={"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1"})
    assert (s.index, s.count, s.local_rank) == (5, 8, 1)
    # torchrun inside srun: the launcher's global rank wins over SLURM_PROCID
    s = detect_shard(env={"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "3", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"})
    assert (s.index, s.count, s.local_rank) == (3, 4, 3)


def test_srun_tasks():
    s = detect_shard(env={"SLURM_PROCID": "6", "SLURM_NTASKS": "8", "SLURM_LOCALID": "2"})
    assert (s.index, s.count, s.local_rank, s.source) == (6, 8, 2, "srun")


def test_slurm_array_and_its_combination_with_processes():
    s = detect_shard(env={"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_MIN": "10", "SLURM_ARRAY_TASK_COUNT": "4"})
    assert (s.index, s.count, s.local_rank) == (2, 4, None)
    # array of 3 tasks, each a torchrun of 2 processes: 6 shards
    s = detect_shard(env={"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3",
                          "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert (s.index, s.count, s.local_rank) == (5, 6, 1)
    with pytest.raises(ShardError, match="contiguous range"):
        detect_shard(env={"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_COUNT": "4"})
    with pytest.raises(ShardError, match="step 2"):
        detect_shard(env={"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_STEP": "2"})


def test_explicit_options_replace_the_array():
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"}
    s = detect_shard(4, 3, env=env)
    assert (s.index, s.count, s.source) == (3, 4, "--shard-index")
    with pytest.raises(ShardError, match="give both or neither"):
        detect_shard(4, None, env={})
    with pytest.raises(ShardError, match="not in 0..3"):
        detect_shard(4, 4, env={})
    with pytest.raises(ShardError, match="RANK=.* not an integer|'x' is not an integer"):
        detect_shard(env={"RANK": "x", "WORLD_SIZE": "2"})


def test_assignment_is_balanced_by_instances_deterministic_and_complete():
    weights = [image_weight(n) for n in [9, 1, 1, 1, 1, 1, 1, 1, 1, 4, 4, 0]]
    owners = assign_shards(weights, 3)
    assert owners == assign_shards(list(weights), 3)
    loads = [sum(w for w, o in zip(weights, owners) if o == s) for s in range(3)]
    assert sorted(loads) == [12, 12, 13]  # 37 units of work; equal image counts would give 4 images each
    counts = [owners.count(s) for s in range(3)]
    assert counts[owners[0]] == min(counts)  # the 9-instance image's shard takes fewer images


def test_more_shards_than_images():
    images = [SimpleNamespace(id=i, instances=[0] * i) for i in (7, 8, 9)]
    parts = [shard_image_ids(images, Shard(k, 5)) for k in range(5)]
    assert sorted(i for p in parts for i in p) == [7, 8, 9]
    assert sum(1 for p in parts if not p) == 2
    assert shard_image_ids(images, Shard()) == {7, 8, 9}


def test_pin_local_gpu_keeps_one_visible_device(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert pin_local_gpu(Shard(1, 2, local_rank=1)) == "5"
    import os

    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    # a launcher that already gave the process one GPU (srun --gpus-per-task=1)
    assert pin_local_gpu(Shard(3, 4, local_rank=3)) == "5"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(ShardError, match="local rank 2 but only 2 GPUs"):
        pin_local_gpu(Shard(2, 3, local_rank=2))
    assert pin_local_gpu(Shard(0, 2, local_rank=None)) is None


def test_launcher_command(tmp_path):
    from stages.launch import command

    params = tmp_path / "params.yaml"
    params.write_text("launch: {launcher: 'torchrun --nproc_per_node 8'}\n")
    assert command(["extract", "--params", str(params), "--num-shards", "2"]) == [
        "torchrun", "--nproc_per_node", "8", "-m", "stages.extract", "--params", str(params), "--num-shards", "2"]
    params.write_text("launch: {launcher: null}\n")
    assert command(["decode", "--params", str(params)])[:3] == [sys.executable, "-m", "stages.decode"]
    with pytest.raises(ValueError, match="launch: unknown parameter"):
        LaunchParams.from_dict({"nproc": 2})
    with pytest.raises(ValueError, match="must be null or a command"):
        LaunchParams("  ")
