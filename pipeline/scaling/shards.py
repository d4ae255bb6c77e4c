"""Which share of the images this process handles, from its launcher's environment.

Sources of (shard index, shard count), combined as outer x inner (index = outer * inner_count
+ inner, count = outer_count * inner_count):

outer  explicit `--num-shards/--shard-index` (LLaVA-style chunks), else a SLURM job array
       (`SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN` of `SLURM_ARRAY_TASK_COUNT`), else 1 shard;
inner  the processes of one launch: `RANK`/`WORLD_SIZE` (torchrun, `accelerate launch`), else
       `SLURM_PROCID`/`SLURM_NTASKS` (`srun`), else 1 process.

The GPU of a process is its `LOCAL_RANK` (or `SLURM_LOCALID` under srun). No process talks to
another: each takes its images from `assign_shards`, a pure function of the dataset.
"""

from __future__ import annotations

import heapq
import os
from dataclasses import dataclass
from typing import Mapping, Sequence

from pipeline.errors import ParamsError


class ShardError(ParamsError):
    """Inconsistent shard settings (explicit options or launcher environment)."""


@dataclass(frozen=True)
class Shard:
    """This process's share: shard `index` of `count`; `local_rank` picks its GPU on the node."""

    index: int = 0
    count: int = 1
    local_rank: int | None = None  # None: one process on the node (no pinning)
    source: str = "single process"

    @property
    def is_single(self) -> bool:
        return self.count == 1

    def __str__(self) -> str:
        return f"shard {self.index + 1}/{self.count} ({self.source})"


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError as e:
        raise ShardError(f"environment variable {name}={env[name]!r} is not an integer") from e


def _check(index: int, count: int, what: str) -> None:
    if count < 1 or not 0 <= index < count:
        raise ShardError(f"{what}: shard index {index} is not in 0..{count - 1}")


def _outer(num_shards: int | None, shard_index: int | None, env: Mapping[str, str]) -> tuple[int, int, str | None]:
    if (num_shards is None) != (shard_index is None):
        raise ShardError("--num-shards and --shard-index go together: give both or neither")
    if num_shards is not None:
        _check(shard_index, num_shards, f"--shard-index {shard_index} --num-shards {num_shards}")
        return shard_index, num_shards, "--shard-index"
    if "SLURM_ARRAY_TASK_ID" in env:
        if "SLURM_ARRAY_TASK_COUNT" not in env:
            raise ShardError("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not")
        step = _int(env, "SLURM_ARRAY_TASK_STEP") if "SLURM_ARRAY_TASK_STEP" in env else 1
        first = _int(env, "SLURM_ARRAY_TASK_MIN") if "SLURM_ARRAY_TASK_MIN" in env else 0
        task, count = _int(env, "SLURM_ARRAY_TASK_ID"), _int(env, "SLURM_ARRAY_TASK_COUNT")
        if step != 1:
            raise ShardError(f"SLURM array step {step}: submit the shards as a contiguous range, e.g. --array=0-{count - 1}")
        _check(task - first, count, f"SLURM array task {task} (min {first}, count {count}); "
               "submit the shards as a contiguous range")
        return task - first, count, "SLURM array"
    return 0, 1, None


def _inner(env: Mapping[str, str]) -> tuple[int, int, int | None, str | None]:
    if "RANK" in env and "WORLD_SIZE" in env:
        rank, world = _int(env, "RANK"), _int(env, "WORLD_SIZE")
        _check(rank, world, f"RANK {rank} of WORLD_SIZE {world}")
        local = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else None
        return rank, world, local, "torchrun/accelerate RANK"
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        rank, world = _int(env, "SLURM_PROCID"), _int(env, "SLURM_NTASKS")
        _check(rank, world, f"SLURM_PROCID {rank} of SLURM_NTASKS {world}")
        local = _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else None
        return rank, world, local, "srun"
    return 0, 1, None, None


def detect_shard(num_shards: int | None = None, shard_index: int | None = None,
                 env: Mapping[str, str] | None = None) -> Shard:
    """This process's shard from the explicit options and the launcher's environment."""
    env = os.environ if env is None else env
    o_index, o_count, o_source = _outer(num_shards, shard_index, env)
    i_index, i_count, local, i_source = _inner(env)
    sources = [s for s in (o_source, i_source) if s is not None]
    return Shard(o_index * i_count + i_index, o_count * i_count, local,
                 " x ".join(sources) if sources else "single process")


def image_weight(n_instances: int) -> int:
    """Work of one image: one unit per instance (a prompt / a mask query) plus one for the
    per-image work (image encoding, the occlusion answer)."""
    return n_instances + 1


def assign_shards(weights: Sequence[int], count: int) -> list[int]:
    """Shard of each item: heaviest first to the least loaded shard (ties: fewer items, then
    lower index). Deterministic: depends only on the weights, in order, and `count`."""
    if count < 1:
        raise ShardError(f"shard count {count} must be at least 1")
    heap = [(0, 0, s) for s in range(count)]
    out = [0] * len(weights)
    for i in sorted(range(len(weights)), key=lambda i: (-weights[i], i)):
        load, n, s = heapq.heappop(heap)
        out[i] = s
        heapq.heappush(heap, (load + weights[i], n + 1, s))
    return out


def shard_image_ids(images, shard: Shard) -> set[int]:
    """Ids of the dataset images (records with `.id` and `.instances`) that `shard` handles."""
    owners = assign_shards([image_weight(len(im.instances)) for im in images], shard.count)
    return {im.id for im, owner in zip(images, owners) if owner == shard.index}
