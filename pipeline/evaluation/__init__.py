"""Evaluation: mask AP/AR (pycocotools COCOeval) and per-instance mIoU of amodal and
visible predictions against an amodal dataset.

Outputs under the output folder (names defined in `pipeline.evaluation.report`):
  metrics.json                 the figures, fixed key order:
      {"amodal": {AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100},   fractions in [0, 1],
       "visible": {same},                                              null where COCOeval
       "miou": {amodal_full, amodal_occluded, visible},                gives -1 / no instance
       "buckets": {"none"|"partial"|"heavy": {n, amodal_full, amodal_occluded, visible}},
       "n_gt": ground-truth instances, "n_pred": prompted instances (entries per file),
       "smoke": true when the predictions come from random weights,
       "proposal_matches": under dataset.proposals only: {rule, matched,
                           ground_truth_unmatched, predictions_unmatched}, see proposals.py}
  report.md                    tables; a loud SMOKE banner first when smoke
  plots/pr_curves.csv          recall, amodal_iou50, amodal_iou75, visible_iou50,
                               visible_iou75, smoke: precision at COCOeval's 101 recall
                               thresholds (all areas, maxDets 100, mean over categories)
  plots/pr_curves.png
  plots/miou_by_occlusion.csv  rate_low, rate_high, rate_center, n, amodal_full,
                               amodal_occluded, visible, smoke: mIoU per occlusion-rate bin
  plots/miou_by_occlusion.png
Empty CSV cells are undefined values (no instance / no ground truth).
"""

from pipeline.evaluation.params import EvaluateParams
from pipeline.evaluation.run import evaluate

__all__ = ["EvaluateParams", "evaluate"]
