"""EfficientSAM mask decoder: queries of one image sharing its embedding vs the official per-query tiling.

Run: .venv/bin/python benchmarks/bench_efficient_sam_decoder.py [--threads N] [--repeats R]
Seeded random ViT-T weights on CPU; both paths run alternately in one process on the same inputs,
and the outputs are compared (they must be equal). Prints times and the shared/tiled ratio.
"""

from __future__ import annotations

import argparse
import time

import torch

from pipeline.models.efficient_sam import build_seeded_efficient_sam


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per path and query count")
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
            tiled = embedding.expand(q, -1, -1, -1).contiguous()
            per_query = tokens.reshape(q, 1, *tokens.shape[2:])
            shared_out = decoder(embedding, pe, tokens, True)
            tiled_out = decoder(tiled, pe, per_query, True)
            diff = max((a.reshape(-1) - b.reshape(-1)).abs().max().item() for a, b in zip(shared_out, tiled_out))
            times = {"tiled": 0.0, "shared": 0.0}
            for _ in range(args.repeats):
                for name, call in (("tiled", lambda: decoder(tiled, pe, per_query, True)),
                                   ("shared", lambda: decoder(embedding, pe, tokens, True))):
                    start = time.perf_counter()
                    call()
                    times[name] += time.perf_counter() - start
            t, s = times["tiled"] / args.repeats, times["shared"] / args.repeats
            print(f"Q={q:3d}  tiled {t:7.3f} s  shared {s:7.3f} s  shared/tiled {s / t:5.2f}  max |diff| {diff:.1e}")


if __name__ == "__main__":
    main()
