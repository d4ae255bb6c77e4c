"""Evaluating predictions made from detector proposals (`dataset.proposals`).

Scores: COCOeval ranks a proposal's prediction by `evaluate.proposal_score`:
    det_x_iou  the detector's score x the segmenter's predicted IoU (SAMEO's rule; default)
    det        the detector's score alone
AP/AR are COCOeval's over all predictions against all ground truth, as for a detector.

mIoU needs one prediction per ground-truth instance; proposals give none, some or several.
`match` pairs them as COCOeval does at IoU 0.5: per image and category, predictions in
descending score order each take the unmatched ground-truth instance of highest amodal mask
IoU, if that IoU is >= MATCH_IOU. The mIoUs then average over the matched ground-truth
instances only; misses (unmatched ground truth) and false positives (unmatched proposals)
are counted beside them, not averaged.
"""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
from pycocotools import mask as mask_utils

from pipeline.datasets.record import AmodalDataset
from pipeline.masks import to_compressed
from pipeline.predictions import PredictionFormatError

PROPOSAL_SCORES = ("det_x_iou", "det")
MATCH_IOU = 0.5
MIOU_RULE = (
    "over matched ground-truth instances only: per image and category, predictions in "
    "descending score order each take the unmatched ground-truth instance of highest amodal "
    f"mask IoU if it is >= {MATCH_IOU} (COCOeval's matching at IoU {MATCH_IOU}); misses and "
    "false positives are counted in 'proposal_matches', not averaged")


def ranked(entries: list[dict], rule: str, path: str | os.PathLike) -> list[dict]:
    """`entries` with `score` replaced by the `rule` score (PROPOSAL_SCORES); a
    PredictionFormatError naming `path` and the entry when one lacks its `detector_score`."""
    if rule not in PROPOSAL_SCORES:
        raise ValueError(f"evaluate.proposal_score must be one of {PROPOSAL_SCORES}, got {rule!r}")
    out = []
    for i, entry in enumerate(entries):
        det = entry.get("detector_score")
        if isinstance(det, bool) or not isinstance(det, (int, float)) or not np.isfinite(det):
            raise PredictionFormatError(
                f"{path}: entry {i} (gt_id {entry.get('gt_id')!r}): no finite 'detector_score'; "
                "under dataset.proposals the decode stage writes one (re-run decode)")
        score = float(det) * float(entry["score"]) if rule == "det_x_iou" else float(det)
        out.append({**entry, "score": score})
    return out


def match(queries: AmodalDataset, amodal_entries: list[dict]) -> dict[int, int]:
    """{query id: ground-truth instance id} by the rule of the module docstring;
    `amodal_entries` carry the ranking `score` (see `ranked`) and compressed RLEs."""
    truth = queries.ground_truth
    by_image: dict[tuple[int, int], list[dict]] = {}
    for e in amodal_entries:
        by_image.setdefault((int(e["image_id"]), int(e["category_id"])), []).append(e)
    pairs: dict[int, int] = {}
    for image in truth.images:
        for category in sorted({inst.category_id for inst in image.instances}):
            preds = sorted(by_image.get((image.id, category), []), key=lambda e: -e["score"])
            gts = [inst for inst in image.instances if inst.category_id == category]
            if not preds:
                continue
            iou = np.asarray(mask_utils.iou([e["segmentation"] for e in preds],
                                            [to_compressed(g.amodal_rle) for g in gts],
                                            [0] * len(gts))).reshape(len(preds), len(gts))
            taken = np.zeros(len(gts), bool)
            for p, e in enumerate(preds):
                row = np.where(taken, -1.0, iou[p])
                best = int(np.argmax(row))
                if row[best] >= MATCH_IOU:
                    taken[best] = True
                    pairs[int(e["gt_id"])] = gts[best].id
    return pairs


def paired(queries: AmodalDataset, pairs: dict[int, int]) -> AmodalDataset:
    """`queries` whose matched queries carry their ground-truth instance's masks and occlusion
    rate (the per-instance IoUs of `pipeline/evaluation/miou.py` then hold for them); the
    unmatched keep none and are left out of the mIoUs."""
    truth = {inst.id: inst for im in queries.ground_truth.images for inst in im.instances}
    images = []
    for im in queries.images:
        instances = []
        for q in im.instances:
            g = truth.get(pairs.get(q.id))
            instances.append(q if g is None else replace(
                q, amodal_rle=g.amodal_rle, visible_rle=g.visible_rle, occlusion_rate=g.occlusion_rate,
                occluder_ids=None))
        images.append(replace(im, instances=tuple(instances)))
    return replace(queries, images=tuple(images))


def match_counts(queries: AmodalDataset, pairs: dict[int, int]) -> dict:
    """metrics.json's "proposal_matches": matched, missed ground truth, false positives."""
    n_gt = queries.ground_truth.instance_count()
    return {"rule": MIOU_RULE, "matched": len(pairs), "ground_truth_unmatched": n_gt - len(pairs),
            "predictions_unmatched": queries.instance_count() - len(pairs)}


def paired_from_file(queries: AmodalDataset, amodal_file: str | os.PathLike, rule: str) -> AmodalDataset:
    """`paired` for the amodal prediction file `amodal_file` ranked by `rule` (what the gallery
    shows under dataset.proposals: the matched queries, as evaluate pairs them)."""
    from pipeline.evaluation.checked_predictions import read_checked

    entries = ranked(read_checked(amodal_file, queries).entries, rule, amodal_file)
    return paired(queries, match(queries, entries))
