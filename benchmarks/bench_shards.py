"""Shard balance: the slowest shard's work against the mean, for the instance-balanced
assignment (`pipeline/scaling/shards.py`) side by side with contiguous chunks (LLaVA's
`--num-chunks/--chunk-idx`) and round-robin by image, on synthetic datasets whose instance
counts drift along the file (scenes recorded in sessions, as D2SA and KINS are ordered).

    .venv/bin/python benchmarks/bench_shards.py [--images 3600] [--mean 4.35] [--seed 0]

Work is counted in the assignment's own units (`image_weight`: instances + 1 per image), so
the ratio is the run time of the slowest process over the ideal, if cost follows that model.
Also times the assignment itself.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pipeline.scaling.shards import assign_shards, image_weight


def instance_counts(n_images: int, mean: float, seed: int) -> np.ndarray:
    """Poisson counts whose mean drifts between 0.3x and 2x `mean` over 12 sessions."""
    rng = np.random.default_rng(seed)
    session_means = mean * rng.uniform(0.3, 2.0, 12)
    means = np.repeat(session_means, -(-n_images // 12))[:n_images]
    return rng.poisson(means)


def makespan_ratio(weights: np.ndarray, owners: list[int] | np.ndarray, count: int) -> float:
    loads = np.bincount(np.asarray(owners), weights=weights, minlength=count)
    return float(loads.max() / loads.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3600)
    parser.add_argument("--mean", type=float, default=4.35, help="mean instances per image (D2SA val: 4.35)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = instance_counts(args.images, args.mean, args.seed)
    weights = np.array([image_weight(int(n)) for n in counts])
    print(f"{args.images} images, {counts.sum()} instances (synthetic, drifting per session)")
    print(f"{'shards':>6} {'balanced':>9} {'chunks':>9} {'round-robin':>12}   slowest shard / mean")
    for count in (2, 4, 8, 16, 64):
        balanced = assign_shards(weights.tolist(), count)
        chunks = np.arange(args.images) * count // args.images
        robin = np.arange(args.images) % count
        print(f"{count:>6} {makespan_ratio(weights, balanced, count):>9.3f} "
              f"{makespan_ratio(weights, chunks, count):>9.3f} {makespan_ratio(weights, robin, count):>12.3f}")
    t = time.perf_counter()
    assign_shards(weights.tolist(), 64)
    print(f"assignment of {args.images} images to 64 shards: {1e3 * (time.perf_counter() - t):.1f} ms")


if __name__ == "__main__":
    main()
