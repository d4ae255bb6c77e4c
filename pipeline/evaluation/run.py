"""`evaluate`: prediction files + ground truth -> metrics.json, report.md, plots."""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from pipeline.datasets.record import AmodalDataset
from pipeline.datasets.skips import skipped_image_ids, summarize
from pipeline.evaluation import proposals
from pipeline.evaluation.ap import coco_mask_ap
from pipeline.evaluation.checked_predictions import check_pairing, read_checked
from pipeline.evaluation.coco_gt import coco_ground_truth
from pipeline.evaluation.miou import binned_means, bucket_means, instance_ious, mean_ious
from pipeline.evaluation.params import EvaluateParams
from pipeline.evaluation.protocol import counts_dict, is_modal_given, protocol_dict
from pipeline.evaluation.report import (SMOKE_BANNER, EvaluationContext, metrics_dict,
                                        write_evaluation)

log = logging.getLogger(__name__)


def evaluate(dataset: AmodalDataset, amodal_file: str | os.PathLike,
             visible_file: str | os.PathLike, out_dir: str | os.PathLike,
             params: EvaluateParams = EvaluateParams(),
             timings: dict[str, float] | None = None, *, run: dict,
             skips: list | None = None) -> dict:
    """Evaluate amodal and visible prediction files against `dataset`; write `out_dir`.

    Returns the metrics.json content. Every input is checked before anything is written.
    `run`: metrics.json's "run" (`run_info.describe_run`, or `undescribed_run` saying why
    there is none).
    `timings`, when given, receives seconds per step ('read predictions', 'AP amodal',
    'AP visible', 'mIoU', 'report'). `skips`: the records the run left out (Skip objects of
    `pipeline/datasets/skips.py`, None = not recorded); the instances of skipped images stay
    in the ground truth and count as misses (and as "counts"' skipped_images).
    Under dataset.proposals (`dataset.proposals` set, `dataset.ground_truth` the annotations)
    predictions are ranked by `params.proposal_score` and the mIoUs run over the matched
    ground truth (`pipeline/evaluation/proposals.py`; metrics.json's "proposal_matches").
    """
    timings = {} if timings is None else timings
    truth = dataset.ground_truth or dataset  # the queries' ground truth under dataset.proposals
    with _timed(timings, "read predictions"):
        amodal = read_checked(amodal_file, dataset)
        visible = read_checked(visible_file, dataset)
        check_pairing(amodal, visible)
    amodal_ranked, visible_ranked = amodal.entries, visible.entries
    if dataset.proposals is not None:
        amodal_ranked = proposals.ranked(amodal.entries, params.proposal_score, amodal_file)
        visible_ranked = proposals.ranked(visible.entries, params.proposal_score, visible_file)
    smoke = amodal.smoke or visible.smoke
    if smoke:
        log.warning("SMOKE RUN: predictions come from random weights; metrics are not results")
    with _timed(timings, "AP amodal"):
        ap_amodal = coco_mask_ap(coco_ground_truth(truth, "amodal"), amodal_ranked)
    with _timed(timings, "AP visible"):
        visible_gt = coco_ground_truth(truth, "visible")
        ap_visible = coco_mask_ap(visible_gt, visible_ranked)
    with _timed(timings, "mIoU"):
        matches = None
        if dataset.proposals is not None:
            pairs = proposals.match(dataset, amodal_ranked)
            matches = proposals.match_counts(dataset, pairs)
            dataset = proposals.paired(dataset, pairs)
        ious = instance_ious(dataset, amodal, visible)
        modal_given = is_modal_given(amodal)
        if modal_given:
            log.warning("decode.modal_given: amodal scores are all 1.0, amodal AP/AR are withheld; "
                        "the amodal result is the mIoU")
        metrics = metrics_dict(ap_amodal, ap_visible, mean_ious(ious), bucket_means(ious),
                               n_gt=truth.instance_count(), n_pred=len(amodal.entries),
                               smoke=smoke, protocol=protocol_dict(modal_given, dataset.flavour, dataset.proposals,
                                                                   params.proposal_score), run=run,
                               counts=counts_dict(truth, amodal, visible, skipped_image_ids(skips or [])))
        if matches is not None:
            metrics["proposal_matches"] = matches
        if skips is not None and dataset.proposals is not None:
            # a skipped image's Skip counts its queries; its ground-truth instances are the misses
            n_truth = {im.id: len(im.instances) for im in truth.images}
            skips = [replace(s, instances=n_truth.get(s.image_id, 0)) if s.annotation_id is None else s
                     for s in skips]
        metrics["skipped"] = None if skips is None else summarize(skips)
        binned = binned_means(ious, params.occlusion_bins)
    with _timed(timings, "report"):
        context = EvaluationContext(
            gt_file=truth.annotation_file, amodal_file=Path(amodal_file),
            visible_file=Path(visible_file), n_images=len(truth.images),
            n_visible_gt=len(visible_gt.dataset["annotations"]))
        write_evaluation(out_dir, metrics, ap_amodal, ap_visible, binned, context)
    log.info("evaluation written to %s%s", out_dir, f" ({SMOKE_BANNER})" if smoke else "")
    return metrics


@contextmanager
def _timed(timings: dict[str, float], step: str):
    start = time.perf_counter()
    yield
    timings[step] = time.perf_counter() - start
