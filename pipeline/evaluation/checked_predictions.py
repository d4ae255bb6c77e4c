"""Prediction files checked against the ground truth they are evaluated on.

`read_checked` reads a file with `pipeline.predictions.read_predictions` and rejects,
naming the file and the entry: an unknown image id or category id, a non-finite score,
a malformed RLE (bad counts, size other than the image's), an unknown `gt_id`, a
`gt_id` whose image or category differs from the entry's, and two entries for one
`gt_id` (per-instance mIoU needs exactly one prediction per instance).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.datasets.coco_json import mask_to_rle
from pipeline.datasets.record import AmodalDataset, Instance
from pipeline.masks import to_compressed
from pipeline.predictions import PredictionFormatError, is_smoke, read_predictions


@dataclass(frozen=True)
class CheckedPredictions:
    """Valid predictions of one file: entries with compressed (bytes) RLEs, and the
    entry for each ground-truth instance id that has one."""

    path: Path
    entries: list[dict]
    by_gt_id: dict[int, dict]
    smoke: bool


def read_checked(path: str | os.PathLike, dataset: AmodalDataset) -> CheckedPredictions:
    """Read the prediction file `path` and check every entry against `dataset`."""
    path = Path(path)
    entries = read_predictions(path)
    images = {im.id: im for im in dataset.images}
    instances: dict[int, tuple[int, Instance]] = {
        inst.id: (im.id, inst) for im in dataset.images for inst in im.instances}

    def fail(i: int, problem: str) -> PredictionFormatError:
        entry = entries[i]
        return PredictionFormatError(
            f"{path}: entry {i} (image_id {entry.get('image_id')!r}, "
            f"gt_id {entry.get('gt_id')!r}): {problem}")

    for i, entry in enumerate(entries):
        image_id = entry["image_id"]
        if not _is_int(image_id) or image_id not in images:
            raise fail(i, f"image_id {image_id!r} is not an image of {dataset.annotation_file}")
        if not _is_int(entry["category_id"]) or entry["category_id"] not in dataset.categories:
            raise fail(i, f"category_id {entry['category_id']!r} is not a category of "
                          f"{dataset.annotation_file}")
        score = entry["score"]
        if not isinstance(score, (int, float)) or isinstance(score, bool) or not math.isfinite(score):
            raise fail(i, f"score {score!r} is not a finite number")
    checked, by_gt_id = [], {}
    for i, entry in enumerate(entries):
        image = images[entry["image_id"]]
        try:  # the dataset loaders' own RLE validation: size, counts alphabet, run sums
            rle = mask_to_rle(entry["segmentation"], image.height, image.width, "segmentation")
        except (ValueError, TypeError) as e:
            raise fail(i, str(e)) from e
        entry = {**entry, "segmentation": to_compressed(rle)}
        gt_id = entry.get("gt_id")
        if gt_id is not None:
            if not _is_int(gt_id) or gt_id not in instances:
                raise fail(i, f"gt_id {gt_id!r} is not an instance of {dataset.annotation_file}")
            gt_image_id, instance = instances[gt_id]
            if gt_image_id != entry["image_id"]:
                raise fail(i, f"gt_id {gt_id} belongs to image {gt_image_id}, not {entry['image_id']}")
            if instance.category_id != entry["category_id"]:
                raise fail(i, f"gt_id {gt_id} has category {instance.category_id}, "
                              f"not {entry['category_id']}")
            if gt_id in by_gt_id:
                raise fail(i, f"a second prediction for gt_id {gt_id} "
                              "(mIoU needs one prediction per instance)")
            by_gt_id[gt_id] = entry
        checked.append(entry)
    return CheckedPredictions(path=path, entries=checked, by_gt_id=by_gt_id, smoke=is_smoke(entries))


def check_pairing(amodal: CheckedPredictions, visible: CheckedPredictions) -> None:
    """Amodal and visible predictions come in pairs, one of each per prompted instance."""
    if len(amodal.entries) != len(visible.entries):
        raise PredictionFormatError(
            f"{amodal.path} has {len(amodal.entries)} entries but {visible.path} has "
            f"{len(visible.entries)}: the decode stage writes one of each per prompted instance")
    only_amodal = sorted(set(amodal.by_gt_id) - set(visible.by_gt_id))
    only_visible = sorted(set(visible.by_gt_id) - set(amodal.by_gt_id))
    if only_amodal or only_visible:
        raise PredictionFormatError(
            f"gt_ids differ between {amodal.path} and {visible.path}: only amodal "
            f"{only_amodal[:5]}{'...' if len(only_amodal) > 5 else ''}, only visible "
            f"{only_visible[:5]}{'...' if len(only_visible) > 5 else ''}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
