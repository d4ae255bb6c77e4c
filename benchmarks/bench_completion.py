"""Amodal completions side by side under the modal-given protocol, on two synthetic worlds.

    .venv/bin/python benchmarks/bench_completion.py [--images 150] [--seed 3]

Modal-given protocol (pix2gestalt, PCNet): each completion starts from the ground-truth
visible masks and the amodal box; no decoder runs. Worlds (`vlmsam synth --world`):
'rigid' (each category one silhouette, instances rotated: D2S-like) and 'free' (every
instance a new random shape of its kind). Occluders by the 'gt' rule (the dataset's
occluder ids) and by the 'overlap' rule (every other instance with a pixel in the box).
Prints, per world and rule, mIoU_full and mIoU_occ (the evaluate stage's `instance_ious`)
of every training-free completion and of 'exemplar', and the share of occluded instances
(an occluder used) whose amodal mask the exemplar path made, with the other amodal sources.
Done-when targets: rigid + overlap: exemplar mIoU_occ >= 0.85 and mIoU_full above every
geometric completion; free: exemplar never below occluder_hull.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path

from pipeline.atomic import write_json
from pipeline.datasets import load_dataset
from pipeline.decoding.completion import EXEMPLAR, TRAINING_FREE
from pipeline.decoding.modal_given import modal_given_amodal
from pipeline.decoding.params import DecodeParams
from pipeline.evaluation.checked_predictions import CheckedPredictions
from pipeline.evaluation.miou import instance_ious, mean_ious
from pipeline.masks import to_compressed
from pipeline.synth import ANNOTATION_NAME, synth_coco


def _checked(entries: list[dict], name: str) -> CheckedPredictions:
    entries = [{**e, "segmentation": to_compressed(e["segmentation"])} for e in entries]
    return CheckedPredictions(Path(name), entries, {e["gt_id"]: e for e in entries}, smoke=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=150, help="synthetic 640x480 images per world")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    methods = (*TRAINING_FREE, EXEMPLAR)
    with tempfile.TemporaryDirectory() as tmp:
        for world in ("rigid", "free"):
            data, _ = synth_coco(args.images, seed=args.seed, world=world)
            path = Path(tmp) / world / ANNOTATION_NAME
            write_json(path, data, indent=None)
            dataset = load_dataset(path, "d2sa")
            visible = _checked([{"image_id": im.id, "category_id": i.category_id, "gt_id": i.id,
                                 "segmentation": i.visible_rle, "score": 1.0}
                                for im in dataset.images for i in im.instances], "gt_visible")
            occluded = sum(1 for im in dataset.images for i in im.instances if i.occlusion_rate > 0)
            print(f"\nworld {world}: {len(dataset.images)} images, {dataset.instance_count()} instances, "
                  f"{occluded} occluded")
            for rule in ("gt", "overlap"):
                print(f"  occluders {rule}:   {'completion':14s} mIoU_full  mIoU_occ")
                for method in methods:
                    params = DecodeParams(prompt_mode="box", completion=method, occluders=rule, modal_given=True)
                    entries, summary = modal_given_amodal(dataset, params, progress=False)
                    means = mean_ious(instance_ious(dataset, _checked(entries, method), visible))
                    print(f"                     {method:14s} {means['amodal_full']:9.3f} {means['amodal_occluded']:9.3f}")
                    if summary is not None:
                        with_occluders = [e for e in entries if e["occluder_ids"]]
                        served = sum(e["amodal_source"] == EXEMPLAR for e in with_occluders)
                        others = Counter(e["amodal_source"] for e in with_occluders if e["amodal_source"] != EXEMPLAR)
                        print(f"                     exemplar served {served}/{len(with_occluders)} instances with "
                              f"occluders ({served / max(len(with_occluders), 1):.1%}); bank "
                              f"{sum(summary.bank_sizes.values())} exemplars over {len(summary.bank_sizes)} classes; "
                              f"fallbacks {json.dumps(dict(sorted(others.items())))}")


if __name__ == "__main__":
    main()
