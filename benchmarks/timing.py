"""Timing helper shared by the benchmarks (run them as `python benchmarks/<name>.py`)."""

from __future__ import annotations

import statistics
import time


def median_time(fn, reps: int) -> float:
    """Median wall time of `reps` calls of `fn` after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
