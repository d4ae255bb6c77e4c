"""What an evaluation's numbers mean and what went into them: metrics.json's "protocol"
and "counts" (its "run" comes from `run_info.py`).

protocol  what the method was given (ground-truth amodal boxes and class names, and the
          ground-truth visible masks under decode.modal_given; or a detector's boxes and
          labels under dataset.proposals), what the predictions are, a sentence on
          comparability, whether amodal AP/AR are reported, how the mIoUs pair predictions
          with ground truth ("miou"), and the proposals file (path, sha256, count, kept,
          below_min_score, skipped {reason: n}, ...; null for ground-truth boxes).
counts    how the predictions were made, tallied from the per-instance fields of the
          prediction files (`pipeline/predictions.py`):
            images, instances      ground truth evaluated
            skipped_images         images left out by the run (given by the caller)
            fallbacks              {reason: n} instances whose points fell back to the box
                                   centre (visible file's `fallback`), 'total' included
            occluder_sources       {source: n} where each amodal mask's occluders came from
                                   (`occluder_source`; 'not used' when the completion takes
                                   none, 'not recorded' when the field is absent)
            points_sent            {positive, negative, box} totals of what the segmenter
                                   was sent (visible entries' `points_sent`)
            amodal_equals_visible  amodal masks identical to the visible mask they were
                                   completed from (the visible prediction; the ground-truth
                                   visible mask under modal-given)
            amodal_fields          {field: {value: n}} of every other categorical field of the
                                   amodal file (str, bool or null values: completion,
                                   prompt_mode, and any field a new completion records, e.g.
                                   an amodal source), so new sources are counted as they come
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

from pipeline.datasets.record import AmodalDataset
from pipeline.decoding.routing import points_sent_counts
from pipeline.evaluation.checked_predictions import CheckedPredictions
from pipeline.masks import to_compressed

AMODAL_AP_WITHHELD = (
    "withheld: under decode.modal_given every amodal score is 1.0, so COCOeval's ranking of "
    "the predictions, and with it amodal AP/AR, depends only on their order in the file; "
    "the amodal figures of this run are the mIoUs")
COMPARABILITY = (
    "Not comparable to published amodal instance segmentation AP, where the method must also "
    "detect and classify every object: here each ground-truth instance's box and class name "
    "are given and exactly one mask is predicted for it, so AP/AR measure mask quality of "
    "known instances only.")
MODAL_GIVEN_COMPARABLE = {
    "cocoa_original": (
        "Comparable to pix2gestalt's (CVPR 2024) modal-given amodal mIoU on the original COCO-A "
        "(visible mask given, 82.87): the amodal full-mask mIoU of this report on the same split"),
}
MODAL_GIVEN_OTHER = (
    "Modal-given mIoU: the published modal-given figure (pix2gestalt's 82.87) is on the original "
    "COCO-A files (dataset.flavour: cocoa_original); on this flavour no published table is matched")
PROPOSALS_COMPARABLE = {
    "d2sa": ("Comparable to SAMEO's (CVPR 2025) zero-shot D2SA amodal mask AP with detector boxes "
             "(68.4 with RTMDet boxes, 75.0 with CO-DETR boxes) and AISFormer's (trained on D2SA) 66.3, "
             "given the same detector's boxes on the same split"),
    "cocoa": ("Comparable to SAMEO's (CVPR 2025) zero-shot COCOA-cls amodal mask AP with detector boxes "
              "(54.4 with RTMDet boxes, 54.0 with CO-DETR boxes) and AISFormer's (trained on COCOA-cls) "
              "40.6, given the same detector's boxes on the same split"),
}
PROPOSALS_OTHER = ("COCO mask AP of a detector's boxes completed to amodal masks; the published tables "
                   "with detector boxes (SAMEO, AISFormer) are on D2SA and COCOA-cls, not this flavour")
PUBLISHED_UNIT = " (published figures are percent, ours fractions)"
NAMED_FIELDS = ("fallback", "occluder_source")  # tallied under their own keys
NOT_CATEGORICAL = ("image_id", "category_id", "segmentation", "score", "gt_id")


def is_modal_given(amodal: CheckedPredictions) -> bool:
    """True when the amodal predictions were completed from ground-truth visible masks."""
    return any(bool(e.get("modal_given", False)) for e in amodal.entries)


def protocol_dict(modal_given: bool, flavour: str | None = None, proposals: dict | None = None,
                  proposal_score: str = "det_x_iou") -> dict:
    """metrics.json's "protocol"; `flavour` (the dataset's) picks the published table a
    modal-given or proposals run is comparable to. `proposals`: the proposals file's
    description (`AmodalDataset.proposals`), None for ground-truth boxes; `proposal_score`
    the ranking rule of `pipeline/evaluation/proposals.py`."""
    if proposals is not None:
        return _proposals_protocol(flavour, proposals, proposal_score)
    given = ["ground-truth amodal box of every instance (the prompt box)",
             "ground-truth class name of every instance"]
    if modal_given:
        given.append("ground-truth visible mask of every instance (decode.modal_given: the "
                     "amodal mask is completed from it)")
    return {
        "given": given,
        "predictions": "exactly one amodal and one visible mask per ground-truth instance, "
                       "prompted by that instance (matched by gt_id); nothing is detected",
        "comparability": (MODAL_GIVEN_COMPARABLE.get(flavour, MODAL_GIVEN_OTHER) + ". " + COMPARABILITY
                          if modal_given else COMPARABILITY),
        "modal_given": bool(modal_given),
        "amodal_ap": AMODAL_AP_WITHHELD if modal_given else "reported",
        "miou": "per ground-truth instance, its one prediction matched by gt_id",
        "proposals": None,
    }


def _proposals_protocol(flavour: str | None, proposals: dict, proposal_score: str) -> dict:
    from pipeline.evaluation.proposals import MIOU_RULE

    score = ("detector score x predicted IoU (SAMEO's rule)" if proposal_score == "det_x_iou"
             else "detector score alone")
    return {
        "given": [f"detector boxes and class labels from {proposals['path']} (dataset.proposals; "
                  f"{proposals['kept']} of {proposals['count']} kept); no ground truth"],
        "predictions": (f"one amodal and one visible mask per kept proposal, scored by {score} "
                        f"(evaluate.proposal_score: {proposal_score}); COCOeval matches them to the "
                        "ground truth by mask IoU"),
        "comparability": PROPOSALS_COMPARABLE.get(flavour, PROPOSALS_OTHER) + PUBLISHED_UNIT + ".",
        "modal_given": False,
        "amodal_ap": "reported",
        "miou": MIOU_RULE,
        "proposals": {**proposals, "score": proposal_score},
    }


def counts_dict(dataset: AmodalDataset, amodal: CheckedPredictions, visible: CheckedPredictions,
                skipped_image_ids: Sequence[int] = ()) -> dict:
    """metrics.json's "counts" (see the module docstring)."""
    fallbacks = _tally(e["fallback"] for e in visible.entries if e.get("fallback"))
    sources = _tally(("not recorded" if "occluder_source" not in e
                      else e["occluder_source"] or "not used") for e in amodal.entries)
    fields: dict[str, Counter] = {}
    for e in amodal.entries:
        for key, value in e.items():
            if key in NOT_CATEGORICAL or key in NAMED_FIELDS:
                continue
            if value is None or isinstance(value, (str, bool)):
                fields.setdefault(key, Counter())[_label(value)] += 1
    return {
        "images": len(dataset.images),
        "instances": dataset.instance_count(),
        "skipped_images": len(skipped_image_ids),
        "fallbacks": {"total": sum(fallbacks.values()), **fallbacks},
        "occluder_sources": sources,
        "amodal_equals_visible": amodal_equals_visible(dataset, amodal, visible),
        "points_sent": points_sent_counts(visible.entries),
        "amodal_fields": {k: dict(sorted(c.items())) for k, c in sorted(fields.items())},
    }


def amodal_equals_visible(dataset: AmodalDataset, amodal: CheckedPredictions,
                          visible: CheckedPredictions) -> int:
    """Amodal predictions identical to the visible mask they were completed from (compressed
    COCO RLE is canonical: equal masks have equal counts)."""
    gt_visible = {inst.id: inst.visible_rle for im in dataset.images for inst in im.instances}
    n = 0
    for gt_id, entry in amodal.by_gt_id.items():
        base = gt_visible[gt_id] if entry.get("modal_given") else visible.by_gt_id[gt_id]["segmentation"]
        if base is not None and to_compressed(base)["counts"] == to_compressed(entry["segmentation"])["counts"]:
            n += 1
    return n


def _tally(values: Iterable) -> dict[str, int]:
    return dict(sorted(Counter(_label(v) for v in values).items()))


def _label(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
