"""Detector proposals (`dataset.proposals`): boxes from a detector's COCO results file as the
queries of a run, in place of the ground-truth instances.

The file is what mmdetection (`tools/test.py ... --format-only`) and detectron2
(`COCOEvaluator`, `coco_instances_results.json`) write: a JSON list of
`{"image_id", "category_id", "bbox": [x, y, w, h], "score"}` (other fields, e.g. a
`segmentation`, are ignored). Each kept entry becomes one query Instance of its image:
its box (clipped to the image), its category's name (so the same phrase as a ground-truth
instance of that category) and its detector `score`; it has no masks. Query ids start
above the largest ground-truth id of the dataset (`first_query_id`), in file order, so a
query id never names a ground-truth instance.

Entries below `dataset.proposal_min_score` are dropped and counted. A bad entry (missing
field, non-finite number, unknown image or category, empty box, box outside its image) is
a skip of `pipeline/datasets/skips.py` (`stage` 'load', `file` the proposals file,
`annotation_id` the entry's index in the file, `instances` 0) under `dataset.on_error:
skip`, or stops the run under 'stop'. A file that is missing, not JSON or not a list is one
DatasetError naming it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import replace
from pathlib import Path

from pipeline.datasets.record import AmodalDataset, DatasetError, ImageRecord, Instance
from pipeline.datasets.skips import (PROPOSAL_BOX, PROPOSAL_CATEGORY, PROPOSAL_IMAGE,
                                     PROPOSAL_MALFORMED, Skip)

REQUIRED = ("image_id", "category_id", "bbox", "score")
FINGERPRINT = Path("cache/proposals.json")  # written by the DVC stage `proposals` (stages/proposals.py)


def file_sha256(path: str | Path) -> str:
    """sha256 of the file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_entries(path: str | Path) -> list:
    """The proposals file's list; DatasetError naming the file when missing, not JSON or not a list."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: proposals file not found (dataset.proposals)")
    try:
        entries = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: proposals file is not valid JSON ({e})") from e
    if not isinstance(entries, list):
        raise DatasetError(f"{path}: proposals file must be a JSON list of COCO results "
                           f"[{{image_id, category_id, bbox, score}}], got a {type(entries).__name__}")
    return entries


def first_query_id(dataset: AmodalDataset) -> int:
    """The id of the first proposal query: above every ground-truth instance id."""
    return max((inst.id for im in dataset.images for inst in im.instances), default=0) + 1


class _Bad(Exception):
    def __init__(self, reason: str, problem: str):
        super().__init__(problem)
        self.reason = reason


def _number(entry: dict, key: str) -> float:
    v = entry[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _Bad(PROPOSAL_MALFORMED, f"'{key}' must be a finite number, got {v!r}")
    return float(v)


def _query(entry, images: dict[int, ImageRecord], categories: dict[int, str], query_id: int) -> Instance:
    """One entry -> a query Instance; _Bad with its reason when the entry cannot be used."""
    if not isinstance(entry, dict):
        raise _Bad(PROPOSAL_MALFORMED, f"expected a JSON object, got {type(entry).__name__}")
    missing = [k for k in REQUIRED if k not in entry]
    if missing:
        raise _Bad(PROPOSAL_MALFORMED, f"missing field(s) {missing}")
    image_id, category_id = entry["image_id"], entry["category_id"]
    if isinstance(image_id, bool) or not isinstance(image_id, int) or image_id not in images:
        raise _Bad(PROPOSAL_IMAGE, f"image_id {image_id!r} is not an image of the dataset")
    if isinstance(category_id, bool) or not isinstance(category_id, int) or category_id not in categories:
        raise _Bad(PROPOSAL_CATEGORY, f"category_id {category_id!r} is not a category of the dataset")
    score = _number(entry, "score")
    box = entry["bbox"]
    if not isinstance(box, list) or len(box) != 4:
        raise _Bad(PROPOSAL_MALFORMED, f"bbox must be [x, y, w, h], got {box!r}")
    x, y, w, h = (_number({"bbox": v}, "bbox") for v in box)
    if w <= 0 or h <= 0:
        raise _Bad(PROPOSAL_BOX, f"bbox {box} is empty (width and height must be > 0)")
    image = images[image_id]
    x0, y0 = max(x, 0.0), max(y, 0.0)
    x1, y1 = min(x + w, float(image.width)), min(y + h, float(image.height))
    if x1 <= x0 or y1 <= y0:
        raise _Bad(PROPOSAL_BOX, f"bbox {box} lies outside the {image.width}x{image.height} image")
    return Instance(id=query_id, category_id=category_id, category_name=categories[category_id],
                    bbox=(x0, y0, x1 - x0, y1 - y0), amodal_rle=None, visible_rle=None,
                    occlusion_rate=None, score=score)


def with_proposals(dataset: AmodalDataset, path: str | Path, min_score: float = 0.0,
                   on_error: str = "stop", image_subset: bool = False) -> AmodalDataset:
    """`dataset` with each image's instances replaced by the proposals of the file `path`.

    The result's `ground_truth` is `dataset` (what evaluate scores against), its `skips` are
    the dataset's plus the bad proposals', and its `proposals` describes the file: path,
    sha256, count (entries), kept, below_min_score, skipped {reason: n}, min_score,
    first_query_id. `image_subset`: the dataset holds only some of the file's images
    (`dataset.max_images`), so a proposal of another image is left out uncounted as skipped
    (counted as `other_images`).
    """
    path = Path(path)
    entries = read_entries(path)
    images = {im.id: im for im in dataset.images}
    first_id = first_query_id(dataset)
    queries: dict[int, list[Instance]] = {im.id: [] for im in dataset.images}
    skips: list[Skip] = []
    below, other_images = 0, 0
    for index, entry in enumerate(entries):
        try:
            query = _query(entry, images, dataset.categories, first_id + index)
        except _Bad as bad:
            image_id = entry.get("image_id") if isinstance(entry, dict) else None
            if bad.reason == PROPOSAL_IMAGE and image_subset:
                other_images += 1
                continue
            message = f"{path}: proposal {index} (image_id {image_id!r}): {bad}"
            if on_error == "stop":
                raise DatasetError(message) from None
            skips.append(Skip("load", bad.reason, str(path),
                              image_id if isinstance(image_id, int) and not isinstance(image_id, bool) else None,
                              index, 0, message))
            continue
        if query.score < min_score:
            below += 1
            continue
        queries[entry["image_id"]].append(query)
    kept = sum(len(q) for q in queries.values())
    identity = {
        "path": str(path), "sha256": file_sha256(path), "count": len(entries), "kept": kept,
        "below_min_score": below, "other_images": other_images,
        "skipped": dict(sorted(Counter(s.reason for s in skips).items())),
        "min_score": float(min_score), "first_query_id": first_id,
    }
    records = tuple(replace(im, instances=tuple(queries[im.id])) for im in dataset.images)
    return replace(dataset, images=records, skips=dataset.skips + tuple(skips),
                   ground_truth=dataset, proposals=identity)


def file_identity(path: str | Path | None) -> dict:
    """What the DVC stage `proposals` writes to FINGERPRINT: {"path", "sha256"} of the proposals
    file, or {"path": None} when there is none; DatasetError naming a missing file."""
    if path is None:
        return {"path": None}
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: proposals file not found (dataset.proposals)")
    return {"path": str(path), "sha256": file_sha256(path)}
