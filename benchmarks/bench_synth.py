"""Synthetic-scene generator and D2SA loader speed, with D2SA-val extrapolation.

    .venv/bin/python benchmarks/bench_synth.py [--images 200] [--width 640] [--height 480]

Times, side by side in one run on the same seed: scene drawing alone (`synth_coco`, in
memory), `generate` writing JPEG, `generate` writing PNG, and `load_dataset` (d2sa flavour,
with and without opening every image) on the JPEG output. Prints seconds, per-image costs,
ratios, and extrapolations (linear in images) to D2SA-val scale: 3,600 images.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pipeline.datasets import load_dataset
from pipeline.synth import generate, synth_coco

D2SA_VAL_IMAGES = 3600


def _timed(fn):
    """(result, (wall seconds, CPU seconds of this process)); CPU time is what a shared,
    oversubscribed machine distorts least."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, (time.perf_counter() - t, time.process_time() - c)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200, help="images per timed run")
    ap.add_argument("--width", type=int, default=640, help="image width")
    ap.add_argument("--height", type=int, default=480, help="image height")
    ap.add_argument("--seed", type=int, default=0, help="random seed")
    args = ap.parse_args()
    n, size = args.images, dict(width=args.width, height=args.height)

    (data, _), t_draw = _timed(lambda: synth_coco(n, args.seed, **size))
    n_inst = len(data["annotations"])
    with tempfile.TemporaryDirectory() as tmp:
        jpg, t_jpg = _timed(lambda: generate(Path(tmp, "jpg"), n, args.seed, image_format="jpg",
                                             progress=False, **size))
        _, t_png = _timed(lambda: generate(Path(tmp, "png"), n, args.seed, image_format="png",
                                           progress=False, **size))
        ds, t_load = _timed(lambda: load_dataset(jpg, "d2sa"))
        _, t_check = _timed(lambda: load_dataset(jpg, "d2sa", check_images=True))
        mb = sum(p.stat().st_size for p in Path(tmp, "jpg").rglob("*") if p.is_file()) / 2**20
    assert ds.instance_count() == n_inst

    scale = D2SA_VAL_IMAGES / n
    print(f"{n} images {args.width}x{args.height}, {n_inst} instances ({n_inst / n:.2f}/image), "
          f"JPEG output {mb:.1f} MiB")
    rows = [
        ("draw scenes in memory (synth_coco)", t_draw),
        ("generate, JPEG files", t_jpg),
        ("generate, PNG files", t_png),
        ("load_dataset d2sa", t_load),
        ("load_dataset d2sa, check_images", t_check),
    ]
    print(f"{'step':36s} {'wall s':>7s} {'CPU s':>7s} {'CPU ms/image':>13s} "
          f"{'CPU s for 3600 images (extrapolated)':>37s}")
    for name, (wall, cpu) in rows:
        print(f"{name:36s} {wall:7.2f} {cpu:7.2f} {1e3 * cpu / n:13.1f} {cpu * scale:37.0f}")
    print(f"ratio generate JPEG / draw only (CPU): {t_jpg[1] / t_draw[1]:.2f}")
    print(f"ratio generate PNG / generate JPEG (CPU): {t_png[1] / t_jpg[1]:.2f}")
    print(f"load_dataset: {1e3 * t_load[1] / n_inst:.2f} CPU ms per instance")


if __name__ == "__main__":
    main()
