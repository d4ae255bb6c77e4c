"""Every segmenter family's mask decoder at real widths: 16 queries vs 1 over one cached image
embedding, against the family's FLOP floor.

Run: .venv/bin/python benchmarks/bench_segmenter_decoders.py [--threads N] [--repeats R] [--families sam ...]
For each registered family (`pipeline.segmenters.family_names()`) and each of its published
variants (`Segmenter.real_width_variants`), the family builds that variant with seeded random
weights (`Segmenter.seeded_real_width`: prompt encoder and mask decoder as published, the image
encoder at its widths but cut to `--encoder-blocks` blocks). One 480x640 image is embedded once;
then `decode_raw` (prompt encoder + mask decoder, one batched call, no image encoder, no resizing
to the original size) decodes 1 and 16 queries of 2 positives + 2 negatives, the negatives only
where `decode.negatives: auto` sends them. Printed per variant:
  time/query 16 vs 1   (T16 / 16) / T1 : the measured cost of a query in a batch of 16, per lone query
  FLOP floor           F16 / (16 F1)   : the same ratio of FLOPs (torch's FlopCounterMode)
  time / floor         how far the measured ratio lies above the FLOP floor
A decoder that redoes the per-image work for every query has a floor near 1; one that does it
once per call (EfficientSAM's `predict_all_masks`) has a floor well below 1.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.decoding.routing import sends_negatives
from pipeline.segmenters import PromptQueries, family_names, get_family

HEIGHT, WIDTH = 480, 640
QUERY_COUNTS = (1, 16)
LABELS = (1, 1, 0, 0)  # the sampler's default: 2 positives + 2 negatives per instance


def flops(call) -> int:
    """FLOPs of `call` (CPU attention kernels are counted through their matmul decomposition)."""
    with FlopCounterMode(display=False) as counter:
        call()
    return counter.get_total_flops()


def queries(q: int, trained_on_negatives: bool) -> PromptQueries:
    """`q` queries of LABELS at seeded random places, negatives dropped as decode.negatives auto does."""
    labels = np.array(LABELS, np.int64)
    if not sends_negatives("auto", trained_on_negatives):
        labels = labels[labels != 0]
    rng = np.random.default_rng(q)
    xy = np.stack([rng.uniform(0, WIDTH, (q, len(labels))), rng.uniform(0, HEIGHT, (q, len(labels)))], -1)
    return PromptQueries(xy.astype(np.float32), np.tile(labels, (q, 1)))


def measure(seg, repeats: int) -> dict:
    """{q: (median seconds, FLOPs)} of `decode_raw` over one embedding; the FLOP count is the
    warm-up, then the query counts are timed alternately (a load change hits both alike)."""
    image = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    embedding = seg.embed(image)
    calls = {q: (lambda b=queries(q, seg.trained_on_negatives): seg.decode_raw(embedding, b)) for q in QUERY_COUNTS}
    counted = {q: flops(call) for q, call in calls.items()}
    times = {q: [] for q in calls}
    for _ in range(repeats):
        for q, call in calls.items():
            start = time.perf_counter()
            call()
            times[q].append(time.perf_counter() - start)
    return {q: (statistics.median(times[q]), counted[q]) for q in calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per query count (median, after the counted one)")
    parser.add_argument("--families", nargs="+", default=None, help="families to run (default: every registered one)")
    parser.add_argument("--encoder-blocks", type=int, default=1,
                        help="image encoder blocks built (widths as published; 0 = all); the decoder does not depend on the depth")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"SMOKE weights (seeded random), real widths; device {args.device}, CPU threads {args.threads}; "
          f"image {WIDTH}x{HEIGHT}; decode_raw only (prompt encoder + mask decoder)")
    print(f"{'family':14s} {'variant':34s} {'pts/q':>5s} {'T1 ms':>8s} {'T16 ms':>8s} {'GFLOP 1':>8s} {'GFLOP 16':>9s} "
          f"{'time/query 16 vs 1':>18s} {'FLOP floor':>10s} {'time/floor':>10s}")
    for family in args.families or family_names():
        cls = get_family(family)
        if not cls.real_width_variants:
            print(f"{family:14s} no real-width seeded build (Segmenter.seeded_real_width): not measured")
            continue
        for variant in cls.real_width_variants:
            seg = cls.seeded_real_width(variant, args.device, args.encoder_blocks or None)
            res = measure(seg, args.repeats)
            (t1, f1), (t16, f16) = res[1], res[16]
            time_ratio, floor = t16 / 16 / t1, f16 / 16 / f1
            points = len(queries(1, seg.trained_on_negatives).labels[0])
            print(f"{family:14s} {variant:34s} {points:5d} {t1 * 1e3:8.1f} {t16 * 1e3:8.1f} {f1 / 1e9:8.2f} {f16 / 1e9:9.2f} "
                  f"{time_ratio:18.3f} {floor:10.3f} {time_ratio / floor:10.2f}", flush=True)
            del seg


if __name__ == "__main__":
    main()
