"""A stage process's start: its shard (`shards.py`) and its GPU, one per process (local rank r
sees only the r-th visible GPU); the stage command-line options that go with it."""

from __future__ import annotations

import argparse
import logging
import os

from pipeline.scaling.shards import Shard, ShardError, detect_shard

log = logging.getLogger(__name__)


def pin_local_gpu(shard: Shard) -> str | None:
    """Restrict CUDA to the GPU of `shard.local_rank` (sets CUDA_VISIBLE_DEVICES before CUDA
    starts), so 'cuda', 'auto' and device maps all mean that one GPU. Returns the GPU's id as
    CUDA_VISIBLE_DEVICES names it, or None when nothing is pinned (no local rank, no GPU, or a
    launcher that already gave the process a single GPU)."""
    import torch

    if shard.local_rank is None:
        return None
    if torch.cuda.is_initialized():
        raise RuntimeError("pin_local_gpu must run before CUDA is initialised")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [x for x in visible.split(",") if x.strip()] if visible is not None else \
        [str(i) for i in range(torch.cuda.device_count())]
    if len(ids) <= 1:
        return ids[0] if ids else None
    if shard.local_rank >= len(ids):
        raise ShardError(f"local rank {shard.local_rank} but only {len(ids)} GPUs are visible "
                         f"(CUDA_VISIBLE_DEVICES={visible!r}); start at most one process per GPU")
    os.environ["CUDA_VISIBLE_DEVICES"] = ids[shard.local_rank]
    log.info("%s: GPU %s (local rank %d)", shard, ids[shard.local_rank], shard.local_rank)
    return ids[shard.local_rank]


def add_shard_arguments(parser: argparse.ArgumentParser) -> None:
    """The explicit shard options of a stage command (launchers set the environment instead)."""
    parser.add_argument("--num-shards", type=int, default=None,
                        help="split the images into this many shards (with --shard-index)")
    parser.add_argument("--shard-index", type=int, default=None,
                        help="the shard this process handles, 0-based (with --num-shards)")


def start_shard(num_shards: int | None = None, shard_index: int | None = None) -> Shard:
    """This process's shard (explicit options, else the launcher's environment), its GPU pinned."""
    shard = detect_shard(num_shards, shard_index)
    pin_local_gpu(shard)
    return shard
