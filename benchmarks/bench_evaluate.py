"""Evaluator speed on a D2SA-val-sized synthetic set (3,600 images, ~15,600 instances).

    .venv/bin/python benchmarks/bench_evaluate.py [--images 3600] [--data-dir DIR]

Generates the scenes once with `pipeline.synth.generate` (640x480, D2SA-like 4.35 objects
per image) into DIR (default: a folder under the system temp dir, reused by later runs),
makes predictions = GT masks shifted by up to 4 px with random scores (plus 3% false
positives), then times each step of `vlmsam evaluate` side by side with a bare pycocotools
COCOeval run on the same files. With --images below 3,600 it also prints extrapolations
to 3,600 images, labelled as such (linear in the number of instances, except the
report step, whose plots have a fixed size).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from pipeline.datasets import load_dataset
from pipeline.evaluation import evaluate
from pipeline.evaluation.coco_gt import coco_ground_truth
from pipeline.evaluation.run_info import undescribed_run
from pipeline.masks import decode, encode
from pipeline.predictions import write_predictions
from pipeline.synth import ANNOTATION_NAME, generate

D2SA_VAL_IMAGES = 3600
FALSE_POSITIVE_RATE = 0.03
MAX_SHIFT = 4


def scenes(data_dir: Path, n_images: int) -> Path:
    """The synthetic annotation file, generated once per (data_dir, n_images)."""
    gt = data_dir / ANNOTATION_NAME
    if gt.exists() and len(json.loads(gt.read_text())["images"]) == n_images:
        print(f"reusing {gt}")
        return gt
    print(f"generating {n_images} synthetic 640x480 scenes into {data_dir} (once) ...")
    start = time.perf_counter()
    generate(data_dir, n_images, seed=0)
    print(f"  generation took {time.perf_counter() - start:.1f} s")
    return gt


def predictions(gt: Path, data_dir: Path) -> tuple[Path, Path]:
    """Perturbed-GT amodal and visible predictions, made once beside the scenes."""
    amodal_file, visible_file = data_dir / "pred_amodal.json", data_dir / "pred_visible.json"
    if amodal_file.exists() and visible_file.exists() and amodal_file.stat().st_mtime > gt.stat().st_mtime:
        return amodal_file, visible_file
    rng = np.random.default_rng(1)
    ds = load_dataset(gt)
    amodal, visible = [], []
    for im in tqdm(ds.images, desc="perturbed predictions", unit="img"):
        for inst in im.instances:
            dy, dx = rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, size=2)
            score = float(rng.uniform(0.05, 1.0))
            for entries, rle in ((amodal, inst.amodal_rle), (visible, inst.visible_rle)):
                mask = np.roll(decode(rle), (dy, dx), axis=(0, 1))
                entries.append({"image_id": im.id, "category_id": inst.category_id,
                                "segmentation": encode(mask), "score": score, "gt_id": inst.id})
            if rng.random() < FALSE_POSITIVE_RATE:  # a box where nothing is, low score
                y0, x0 = rng.integers(0, im.height - 40), rng.integers(0, im.width - 40)
                mask = np.zeros((im.height, im.width), bool)
                mask[y0:y0 + 40, x0:x0 + 40] = True
                for entries in (amodal, visible):
                    entries.append({"image_id": im.id, "category_id": inst.category_id,
                                    "segmentation": encode(mask), "score": score / 4})
    write_predictions(amodal_file, amodal)
    write_predictions(visible_file, visible)
    return amodal_file, visible_file


def bare_cocoeval(gt: COCO, results_file: Path) -> float:
    """Seconds for pycocotools alone: loadRes + evaluate + accumulate + summarize."""
    results = [{k: e[k] for k in ("image_id", "category_id", "segmentation", "score")}
               for e in json.loads(results_file.read_text())]
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        e = COCOeval(gt, gt.loadRes(results), "segm")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=D2SA_VAL_IMAGES, help="number of synthetic images")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where the scenes and predictions are (generated there once)")
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.gettempdir()) / f"vlmsam_bench_evaluate_{args.images}"
    gt_file = scenes(data_dir, args.images)
    amodal_file, visible_file = predictions(gt_file, data_dir)

    start = time.perf_counter()
    ds = load_dataset(gt_file)
    timings = {"GT load": time.perf_counter() - start}
    with tempfile.TemporaryDirectory() as out:
        evaluate(ds, amodal_file, visible_file, out, timings=timings,
                 run=undescribed_run("benchmark on synthetic predictions"))
        metrics = json.loads((Path(out) / "metrics.json").read_text())
    bare = {"amodal": bare_cocoeval(coco_ground_truth(ds, "amodal"), amodal_file),
            "visible": bare_cocoeval(coco_ground_truth(ds, "visible"), visible_file)}

    n_inst, n_pred = ds.instance_count(), metrics["n_pred"]
    total = sum(timings.values())
    print(f"\n{len(ds.images)} images, {n_inst} GT instances, {n_pred} predictions per file "
          f"(amodal AP {metrics['amodal']['AP']:.3f}, visible AP {metrics['visible']['AP']:.3f}, "
          f"mIoU amodal {metrics['miou']['amodal_full']:.3f})")
    print(f"{'step':<18}{'seconds':>9}{'share':>8}")
    for step, seconds in timings.items():
        print(f"{step:<18}{seconds:>9.2f}{seconds / total:>8.1%}")
    print(f"{'total':<18}{total:>9.2f}")
    for view in ("amodal", "visible"):
        ours = timings[f"AP {view}"]
        print(f"AP {view}: evaluator {ours:.2f} s vs bare pycocotools COCOeval {bare[view]:.2f} s "
              f"(ratio {ours / bare[view]:.2f})")
    if args.images < D2SA_VAL_IMAGES:
        scale = D2SA_VAL_IMAGES / len(ds.images)
        guess = {k: v if k == "report" else v * scale for k, v in timings.items()}
        print(f"EXTRAPOLATION (not measured) to {D2SA_VAL_IMAGES} images: x{scale:.1f} linear, "
              "report kept fixed (plots of fixed size): "
              + ", ".join(f"{k} {v:.1f} s" for k, v in guess.items())
              + f", total {sum(guess.values()):.1f} s")


if __name__ == "__main__":
    main()
