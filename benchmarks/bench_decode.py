"""Decode-stage speed with seeded random EfficientSAM ViT-T on CPU, side by side in one run.

    .venv/bin/python benchmarks/bench_decode.py [--variant vitt] [--reps 3] [--images 4] [--threads N]

Prints: time to encode one 640x480 image; time of ONE batched decoder call for 1 and for 16
instances (prompt encoding + mask decoder + best-of-3 selection + upsampling to 640x480 +
threshold, i.e. `decode_image` minus the encoder) and their ratio (target <= 1.3x); the
floating-point operations of the two decoder calls (torch's FlopCounterMode) and their ratio,
which bounds the time ratio on a compute-bound device such as a CPU; 16 instances as 16
single-query calls vs one batched call; per-image totals (encode + decode)
for 1 vs 16 instances; and images/s of the whole stage (`run_decode`: image loading, prompts,
decoding, completion, RLE, resumable parts, merge) on synthetic 640x480 scenes.
Medians over --reps repetitions after one warm-up. Random weights: speed only, no quality.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from timing import median_time  # benchmarks/timing.py (the script's folder is on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="vitt", choices=("vitt", "vits"))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--images", type=int, default=4, help="synthetic images for the end-to-end rate")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    from pipeline.datasets import load_dataset
    from pipeline.decoding.params import DecodeParams, SamModelParams
    from pipeline.decoding.prompts import ImagePrompts
    from pipeline.decoding.run import run_decode
    from pipeline.decoding.sam import decode_image, load_sam_models
    from pipeline.synth import generate

    models = load_sam_models("smoke", SamModelParams(args.variant), use_amodal_decoder=False)
    model = models.model
    h, w = 480, 640
    rng = np.random.default_rng(0)
    image = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    print(f"EfficientSAM {args.variant}, seeded random weights, CPU, torch threads {torch.get_num_threads()}, "
          f"image {w}x{h}, median of {args.reps}")

    with torch.inference_mode():
        t_encode = median_time(lambda: model.get_image_embeddings(image), args.reps)
        embedding = model.get_image_embeddings(image)
    print(f"encode one image:                       {t_encode * 1000:8.1f} ms")

    def prompts(q: int) -> ImagePrompts:
        pts = np.stack([rng.uniform(0, w, (q, 4)), rng.uniform(0, h, (q, 4))], axis=-1).astype(np.float32)
        labels = np.tile(np.array([1, 1, 0, 0]), (q, 1))
        return ImagePrompts(pts, labels, ("",) * q)

    # decode_image with the encoder replaced by the precomputed embedding: the decode part alone
    encode = model.get_image_embeddings
    model.get_image_embeddings = lambda images: embedding
    p1, p16 = prompts(1), prompts(16)
    t1 = median_time(lambda: decode_image(models, image, p1), args.reps)
    t16 = median_time(lambda: decode_image(models, image, p16), args.reps)
    t16_single = median_time(lambda: decode_image(models, image, p16, max_queries_per_call=1), args.reps)
    model.get_image_embeddings = encode
    print(f"decode 1 instance (one call):           {t1 * 1000:8.1f} ms")
    print(f"decode 16 instances (one batched call): {t16 * 1000:8.1f} ms")
    print(f"decode 16 instances (16 single calls):  {t16_single * 1000:8.1f} ms")
    print(f"ratio decode 16 / 1 (one call each):    {t16 / t1:8.2f} x   (target <= 1.3 x)")
    print(f"ratio 16 single calls / 1 batched call: {t16_single / t16:8.2f} x")
    flops = {}
    with torch.inference_mode():
        tokens = model.encode_prompts(torch.rand(1, 16, 4, 2) * 400, torch.ones(1, 16, 4, dtype=torch.long), h, w)
        for q in (1, 16):
            with FlopCounterMode(display=False) as counter:
                model.decode(embedding, tokens[:, :q], multimask_output=True)
            flops[q] = counter.get_total_flops()
    print(f"decoder FLOPs, 1 / 16 instances:        {flops[1] / 1e9:8.2f} / {flops[16] / 1e9:.2f} GFLOP "
          f"(ratio {flops[16] / flops[1]:.2f} x: the least time ratio where arithmetic is the bottleneck)")
    e1, e16 = t_encode + t1, t_encode + t16
    print(f"per image, encode + decode, 1 instance: {e1 * 1000:8.1f} ms")
    print(f"per image, encode + decode, 16 inst.:   {e16 * 1000:8.1f} ms")
    print(f"ratio per image 16 / 1 instances:       {e16 / e1:8.2f} x")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dataset = load_dataset(generate(tmp / "synth", args.images, seed=1, width=w, height=h, progress=False))
        params = DecodeParams(prompt_mode="box", completion="occluder_hull", occluders="overlap")
        t = time.perf_counter()
        summary = run_decode(dataset, params, "smoke", SamModelParams(args.variant), tmp / "p", tmp / "c",
                             tmp / "v.json", tmp / "a.json", models=models)
        dt = time.perf_counter() - t
    n = summary.n_visible / summary.n_images
    print(f"end to end (run_decode, box prompts, occluder_hull): {summary.n_images} images, "
          f"{n:.1f} instances/image: {summary.n_images / dt:.3f} images/s ({dt / summary.n_images * 1000:.0f} ms/image)")


if __name__ == "__main__":
    main()
