"""Per-instance mask IoUs and their means, overall, per occlusion bucket and binned.

For a ground-truth instance with amodal mask A and visible mask V, and predictions P
(amodal) and Pv (visible) prompted for it (matched by `gt_id`):
  amodal_full      IoU(P, A)
  amodal_occluded  IoU(P - V, A - V); defined only when the hidden part A - V is non-empty
                   (C2F-Seg's protocol), so its mean runs over those instances only
  visible          IoU(Pv, V)
IoU of two empty masks is 1 (nothing to find, nothing predicted: exactly right).
All areas are exact pixel counts from pycocotools RLE ops (merge with intersect, area);
nothing is decoded to a bitmap.

Occlusion buckets, by the ground truth's occlusion rate r = 1 - |V| / |A|:
none (r = 0), partial (0 < r <= 0.25), heavy (r > 0.25).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from pipeline.datasets.record import AmodalDataset
from pipeline.evaluation.checked_predictions import CheckedPredictions
from pipeline.masks import to_compressed

FIGURES = ("amodal_full", "amodal_occluded", "visible")
BUCKETS = ("none", "partial", "heavy")
PARTIAL_MAX_RATE = 0.25  # upper edge (inclusive) of the 'partial' bucket


@dataclass(frozen=True)
class InstanceIoU:
    """The three IoUs of one ground-truth instance (amodal_occluded None: no hidden part)."""

    gt_id: int
    occlusion_rate: float
    amodal_full: float
    amodal_occluded: float | None
    visible: float


def bucket_of(occlusion_rate: float) -> str:
    """'none' (rate 0), 'partial' (0 < rate <= 0.25) or 'heavy' (rate > 0.25)."""
    if occlusion_rate <= 0:
        return "none"
    return "partial" if occlusion_rate <= PARTIAL_MAX_RATE else "heavy"


def instance_ious(dataset: AmodalDataset, amodal: CheckedPredictions,
                  visible: CheckedPredictions) -> list[InstanceIoU]:
    """IoUs of every ground-truth instance with a prediction, in dataset order (under
    dataset.proposals: of the queries `pipeline/evaluation/proposals.py` paired with one).

    Expects `check_pairing(amodal, visible)` to hold (same gt_ids in both files).
    """
    out = []
    for image in tqdm(dataset.images, desc="mIoU", unit="img", leave=False):
        for inst in image.instances:
            if inst.id not in amodal.by_gt_id or inst.amodal_rle is None:
                continue  # no prediction, or a proposal query matched to no ground truth
            a = to_compressed(inst.amodal_rle)
            v = to_compressed(inst.visible_rle)
            p = amodal.by_gt_id[inst.id]["segmentation"]
            pv = visible.by_gt_id[inst.id]["segmentation"]
            area_p, area_a, area_v, area_pv = mask_utils.area([p, a, v, pv])
            p_a = _intersection_area(p, a)
            p_v = _intersection_area(p, v)
            a_v = _intersection_area(a, v)
            p_a_v = _intersection_area(p, a, v)
            pv_v = _intersection_area(pv, v)
            hidden = area_a - a_v  # |A - V|
            occluded = None
            if hidden > 0:
                # |(P-V) & (A-V)| = |P&A| - |P&A&V|;  |(P-V) | (A-V)| = |P|A| - |(P|A)&V|
                union_p_a = area_p + area_a - p_a
                occluded = iou_from_areas(p_a - p_a_v, union_p_a - (p_v + a_v - p_a_v))
            out.append(InstanceIoU(
                gt_id=inst.id,
                occlusion_rate=float(inst.occlusion_rate),
                amodal_full=iou_from_areas(p_a, area_p + area_a - p_a),
                amodal_occluded=occluded,
                visible=iou_from_areas(pv_v, area_pv + area_v - pv_v),
            ))
    return out


def iou_from_areas(intersection: float, union: float) -> float:
    """Intersection over union of pixel counts; 1.0 when both masks are empty."""
    return 1.0 if union == 0 else float(intersection) / float(union)


def mean_ious(ious: list[InstanceIoU]) -> dict[str, float | None]:
    """Mean of each figure over the instances where it is defined; None when none are."""
    means = {}
    for figure in FIGURES:
        values = [getattr(r, figure) for r in ious if getattr(r, figure) is not None]
        means[figure] = float(np.mean(values)) if values else None
    return means


def bucket_means(ious: list[InstanceIoU]) -> dict[str, dict]:
    """{'none'|'partial'|'heavy': {'n', 'amodal_full', 'amodal_occluded', 'visible'}}."""
    return {b: {"n": len(members), **mean_ious(members)}
            for b in BUCKETS
            for members in [[r for r in ious if bucket_of(r.occlusion_rate) == b]]}


def binned_means(ious: list[InstanceIoU], n_bins: int) -> list[dict]:
    """Means per occlusion-rate bin: `n_bins` equal bins over [0, 1], the last closed.

    One row per bin: {'rate_low', 'rate_high', 'n', 'amodal_full', 'amodal_occluded', 'visible'}.
    """
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    rates = np.array([r.occlusion_rate for r in ious], dtype=float)
    index = np.clip(np.searchsorted(edges, rates, side="right") - 1, 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        members = [r for r, i in zip(ious, index) if i == b]
        rows.append({"rate_low": float(edges[b]), "rate_high": float(edges[b + 1]),
                     "n": len(members), **mean_ious(members)})
    return rows


def _intersection_area(*rles: dict) -> float:
    return float(mask_utils.area(mask_utils.merge(list(rles), intersect=True)))
