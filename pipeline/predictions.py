"""Prediction files (`cache/pred_visible.json`, `cache/pred_amodal.json`): the one definition.

A prediction file is a COCO results list (loadable by pycocotools' `COCO.loadRes`), one
entry per prompted instance:
    image_id       int    dataset image id
    category_id    int    category of the prompted ground-truth instance
    segmentation   dict   COCO RLE with str counts, original-image size
    score          float  EfficientSAM's predicted IoU of the chosen mask
    gt_id          int    ground-truth instance the prediction was prompted for (for mIoU;
                          optional for AP); under `dataset.proposals` the proposal query's id
Optional per-instance fields written by the decode stage:
    prompt_mode    str    'points' | 'box' | 'points+box'
    completion     str    amodal completion variant ('decoder' for a learned amodal decoder)
    fallback       str    '' or the sampler's fallback reason
    smoke          bool   True when any model in the chain had random weights
    detector_score float  the detector's score of the proposal the query came from
                          (`dataset.proposals`; evaluate ranks by it, `evaluate.proposal_score`)
  amodal file only (see pipeline/decoding/occluders.py and run.py):
    modal_given    bool   amodal mask completed from ground-truth visible masks (score 1.0)
    occluder_source str|null  which occluders were used ('vlm', 'vlm_none', 'overlap_unmatched',
                          'overlap_parse_failed', 'gt', 'overlap'); null when none are needed
    occluder_ids   int[]  instances whose visible masks served as occluders
    amodal_source  str    where the amodal mask came from (pipeline/decoding/amodal_source.py)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline.atomic import write_json
from pipeline.errors import VlmsamError

REQUIRED_FIELDS = ("image_id", "category_id", "segmentation", "score")


class PredictionFormatError(VlmsamError, ValueError):
    """A prediction file or entry is malformed; the message names the file and entry."""


def read_predictions(path: str | os.PathLike) -> list[dict]:
    """Read and validate a prediction file."""
    path = Path(path)
    if not path.exists():
        raise PredictionFormatError(f"{path}: prediction file not found")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise PredictionFormatError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(entries, list):
        raise PredictionFormatError(f"{path}: expected a JSON list of COCO results")
    for i, entry in enumerate(entries):
        missing = [k for k in REQUIRED_FIELDS if k not in entry]
        if missing:
            raise PredictionFormatError(f"{path}: entry {i} lacks {missing}")
        seg = entry["segmentation"]
        if not (isinstance(seg, dict) and "size" in seg and "counts" in seg):
            raise PredictionFormatError(
                f"{path}: entry {i} (image_id {entry['image_id']}, gt_id {entry.get('gt_id')}): "
                "segmentation is not a COCO RLE with 'size' and 'counts'"
            )
    return entries


def is_smoke(entries: list[dict]) -> bool:
    """True when any entry says it comes from random weights."""
    return any(bool(e.get("smoke", False)) for e in entries)


def write_predictions(path: str | os.PathLike, entries: list[dict]) -> None:
    """Write a prediction file atomically."""
    write_json(path, entries, indent=None)
