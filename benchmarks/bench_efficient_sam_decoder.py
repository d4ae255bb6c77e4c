"""EfficientSAM mask decoder: ours (image tokens projected once per image, never per query) vs the
official formulation (image tiled per query, all projections), side by side.

Run: .venv/bin/python benchmarks/bench_efficient_sam_decoder.py [--threads N] [--repeats R] [--queries 1 4 16]
Seeded random ViT-T weights on CPU; both run alternately in one process on the same inputs, and
their outputs are compared (equal up to float rounding). Prints times, FLOPs (torch's
FlopCounterMode) and the ours/official ratios per number of queries (instances) of one image.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.models.efficient_sam import build_seeded_efficient_sam
from pipeline.models.efficient_sam.official_formulation import official_mask_decoder


def _flops(call) -> int:
    with FlopCounterMode(display=False) as counter:
        call()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per formulation and query count")
    parser.add_argument("--queries", type=int, nargs="+", default=[1, 4, 16], help="queries per image")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = build_seeded_efficient_sam("vitt")
    decoder = model.mask_decoder
    embedding = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(0))
    pe = model.prompt_encoder.get_dense_pe()
    print("SMOKE weights (seeded random); CPU threads:", args.threads)
    with torch.inference_mode():
        for q in args.queries:
            points = torch.rand(1, q, 4, 2, generator=torch.Generator().manual_seed(q)) * 400
            tokens = model.encode_prompts(points, torch.ones(1, q, 4), 480, 640)
            calls = {
                "official": lambda: official_mask_decoder(decoder, embedding, pe, tokens),
                "ours": lambda: decoder.predict_all_masks(embedding, pe, tokens),
            }
            diff = max((a - b).abs().max().item() for a, b in zip(calls["ours"](), calls["official"]()))
            flops = {name: _flops(call) for name, call in calls.items()}
            times = dict.fromkeys(calls, 0.0)
            for _ in range(args.repeats):
                for name, call in calls.items():
                    start = time.perf_counter()
                    call()
                    times[name] += time.perf_counter() - start
            o, s = times["official"] / args.repeats, times["ours"] / args.repeats
            print(f"Q={q:3d}  official {o:7.3f} s {flops['official'] / 1e9:6.1f} GFLOP   "
                  f"ours {s:7.3f} s {flops['ours'] / 1e9:6.1f} GFLOP   "
                  f"ours/official time {s / o:5.2f} FLOPs {flops['ours'] / flops['official']:5.2f}   max |diff| {diff:.1e}")


if __name__ == "__main__":
    main()
