"""COCO mask AP/AR with pycocotools' own `COCOeval` (iouType 'segm'), prints silenced.

Predictions go in unchanged: an empty predicted mask is still a detection (a false
positive, as COCOeval counts it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pipeline.evaluation.coco_gt import quietly

# metrics.json keys, in COCOeval.stats order (the first 9 of its 12 figures).
AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")
# Precision-recall curves kept for plots: IoU threshold -> index into COCOeval's iouThrs.
PR_IOUS = {0.5: 0, 0.75: 5}


@dataclass(frozen=True)
class APResult:
    """AP/AR figures (None where COCOeval says -1: no ground truth in that range) and
    precision at COCOeval's 101 recall thresholds for IoU 0.5 and 0.75 (all areas,
    maxDets 100, mean over categories that have ground truth; NaN where undefined)."""

    stats: dict[str, float | None]
    recall_thresholds: np.ndarray
    precision: dict[float, np.ndarray]


def coco_mask_ap(gt: COCO, predictions: list[dict]) -> APResult:
    """Evaluate COCO results (compressed RLE `segmentation`) against `gt` with COCOeval."""
    results = [{"image_id": p["image_id"], "category_id": p["category_id"],
                "segmentation": p["segmentation"], "score": float(p["score"])}
               for p in predictions]
    dt = _results_coco(gt, results)
    coco_eval = COCOeval(gt, dt, iouType="segm")
    quietly(coco_eval.evaluate)
    quietly(coco_eval.accumulate)
    quietly(coco_eval.summarize)
    stats = {k: _fraction(v) for k, v in zip(AP_KEYS, coco_eval.stats)}
    params = coco_eval.params
    if not np.allclose(params.iouThrs[list(PR_IOUS.values())], list(PR_IOUS)):
        raise RuntimeError(f"unexpected COCOeval IoU thresholds {params.iouThrs}")
    all_areas, max_dets_100 = params.areaRngLbl.index("all"), params.maxDets.index(100)
    precision = {}
    for iou, t in PR_IOUS.items():
        per_category = coco_eval.eval["precision"][t, :, :, all_areas, max_dets_100]  # R x K
        per_category = np.where(per_category < 0, np.nan, per_category)
        with np.errstate(invalid="ignore"):
            has_gt = ~np.all(np.isnan(per_category), axis=0)
            precision[iou] = (np.nanmean(per_category[:, has_gt], axis=1) if has_gt.any()
                              else np.full(per_category.shape[0], np.nan))
    return APResult(stats=stats, recall_thresholds=np.asarray(params.recThrs), precision=precision)


def _results_coco(gt: COCO, results: list[dict]) -> COCO:
    """`gt.loadRes(results)`, also for an empty list (which loadRes cannot take)."""
    if results:
        return quietly(gt.loadRes, results)
    dt = COCO()
    dt.dataset = {"images": list(gt.dataset["images"]), "annotations": [],
                  "categories": list(gt.dataset["categories"])}
    quietly(dt.createIndex)
    return dt


def _fraction(v: float) -> float | None:
    v = float(v)
    return None if v < 0 or math.isnan(v) else v
