"""Sample-stage speed at D2SA-val scale: 15,654 instances, target under 60 s end to end.

Builds a synthetic SMOKE attention cache of realistic shape in a temp dir (LLaVA-NeXT-like:
576 base tokens + 1,920 high-resolution tokens per 1920x1440 image, ~4.35 instances per
image, 3,600 images, 2 layers), then times `run_sample` (read cache -> points.parquet) and
its parts. Scenes come from a pool of distinct ground-truth scenes (their masks are costly to
draw at full size); every image gets its own noisy attention maps and ids.

    .venv/bin/python benchmarks/bench_sample.py [--images 3600] [--strategy peak]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from pipeline.attention.cache import AttentionCacheWriter, ImageAttention, InstanceAttention
from pipeline.datasets.record import AmodalDataset, ImageRecord, Instance
from pipeline.sampling import synthetic
from pipeline.sampling.params import SampleParams
from pipeline.sampling.run import parse_workers, resolve_workers, run_sample

TARGET_S = 60.0
D2SA_VAL_INSTANCES = 15_654
WIDTH, HEIGHT = 1920, 1440
FINE = (40, 48)  # 1,920 high-resolution tokens
RULES = {"new": {}, "pre-grid": {"contrast": "occluders", "pos_margin": 0.0, "snap": False}}


def build(directory: Path, n_images: int, n_instances: int, pool: int = 8):
    """Write the cache and return (cache path, dataset)."""
    rng = np.random.default_rng(0)
    info = synthetic.cache_info()
    placement = synthetic.grid_placement(WIDTH, HEIGHT, fine=FINE)
    extra = n_instances - 4 * n_images  # images with 5 instances, the rest have 4
    scenes = {k: [synthetic.random_scene(rng, WIDTH, HEIGHT, k, first_id=0) for _ in range(pool)] for k in (4, 5)}
    templates = {k: [synthetic.scene_record(s, 0, Path("unused")) for s in scenes[k]] for k in (4, 5)}
    writer = AttentionCacheWriter(directory / "attention.h5", info)
    records = []
    for image_id in range(1, n_images + 1):
        k = 5 if image_id <= extra else 4
        j = int(rng.integers(pool))
        scene, template = scenes[k][j], templates[k][j]
        maps = synthetic.scene_attention(scene, placement, rng, n_layers=len(info.layers))
        new_id = {gt: image_id * 10 + gt for gt in scene.amodal}
        instances = {
            new_id[gt]: InstanceAttention(
                new_id[gt], synthetic.CATEGORY, "the object", ["object"], maps[gt],
                occluder_names=["object"] * len(scene.occluders[gt]),
                occluder_ids=[new_id[o] for o in scene.occluders[gt]],
            )
            for gt in scene.amodal
        }
        writer.write_image(ImageAttention(image_id, WIDTH, HEIGHT, placement, instances))
        insts = tuple(
            Instance(new_id[t.id], t.category_id, t.category_name, t.bbox, t.amodal_rle, t.visible_rle,
                     t.occlusion_rate, tuple(new_id[o] for o in t.occluder_ids))
            for t in template.instances
        )
        records.append(ImageRecord(image_id, directory / f"{image_id}.png", WIDTH, HEIGHT, insts))
    writer.finalize([r.id for r in records])
    dataset = AmodalDataset("bench", directory / "annotations.json", tuple(records), {1: synthetic.CATEGORY})
    return directory / "attention.h5", dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=3600, help="images in the synthetic cache")
    ap.add_argument("--strategy", default="peak", help="sample.strategy to time (peak | kmeans)")
    ap.add_argument("--rules", nargs="+", default=["new"], choices=list(RULES),
                    help="positive rules to time side by side: new (the defaults) and pre-grid "
                         "(no look-alike contrast, no margin, no snap)")
    ap.add_argument("--workers", type=parse_workers, nargs="+", default=[1, 2],
                    help="worker counts to time side by side on the same cache ('auto': the stage's default)")
    args = ap.parse_args()
    args.workers = [resolve_workers(w, args.images) for w in args.workers]  # 'auto' -> its number here
    n_instances = round(D2SA_VAL_INSTANCES * args.images / 3600)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        cache, dataset = build(tmp, args.images, n_instances)
        size_mb = cache.stat().st_size / 2**20
        print(f"built cache: {args.images} images, {dataset.instance_count()} instances, "
              f"{size_mb:.0f} MiB in {time.perf_counter() - t0:.1f} s (not timed below)")
        runs = []
        for rules in args.rules:
            for workers in args.workers:
                timings: Counter = Counter()
                t0, c0 = time.perf_counter(), time.process_time()
                params = SampleParams(strategy=args.strategy, **RULES[rules])
                summary = run_sample(cache, dataset, tmp / "points.parquet", params,
                                     progress=False, timings=timings, workers=workers)
                runs.append((rules, workers, summary, timings, time.perf_counter() - t0, time.process_time() - c0))
    for rules, workers, summary, timings, total, cpu in runs:
        n = summary.instances
        print(f"\nrules={rules}, strategy={args.strategy}, workers={workers}: {n} instances, {summary.points} points, "
              f"fallbacks {dict(summary.fallbacks)}")
        for part in ("read", "upsample", "peaks", "write"):
            print(f"  {part:9s} {timings[part]:7.2f} s  ({1e3 * timings[part] / n:.2f} ms/instance"
                  f"{', summed over workers' if workers > 1 and part != 'write' else ''})")
        scaled = total * D2SA_VAL_INSTANCES / n
        line = f"  end to end {total:.2f} s wall ({1e3 * total / n:.2f} ms/instance)"
        if workers == 1:
            line += f", {cpu:.2f} s CPU of this process"
        print(line)
        print(f"  at {D2SA_VAL_INSTANCES} instances: {scaled:.1f} s wall = {scaled / TARGET_S:.2f} x the "
              f"{TARGET_S:.0f} s target")
    base = runs[0][4]
    print("\nwall time relative to rules=%s, workers=%d: %s" % (runs[0][0], runs[0][1], ", ".join(
        f"rules={r}, workers={w}: {t / base:.2f}" for r, w, _, _, t, _ in runs)))
    print(f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          f"(wall exceeds CPU when other processes share the cores)")

if __name__ == "__main__":
    main()
