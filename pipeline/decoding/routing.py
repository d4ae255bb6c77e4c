"""Which of an instance's prompts reach the segmenter: `decode.negatives`.

The sample stage does not know the segmenter; decode sends each family what it reads:
- 'auto'   negatives (label 0) only to families trained on them (`Segmenter.trained_on_negatives`):
           none reach EfficientSAM (yformer/EfficientSAM #17, #64), all reach SAM, SAM-HQ, SAM 2.1;
- 'always' every sampled point;
- 'never'  positives only.
The slots freed on EfficientSAM stay empty: the sampler's positives are sent as sampled, no
further points are added (the sample stage is segmenter-independent), since its later positives
are less sure than its first two (benchmarks/bench_freed_slots.py; README: segmenters).
A box (labels 2/3 in `ImagePrompts`) becomes the query's box. Every entry records what was sent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.decoding.prompts import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT, PAD, ImagePrompts, PromptError
from pipeline.segmenters.segmenter import LABEL_NEGATIVE, PromptQueries

NEGATIVES = ("auto", "always", "never")


@dataclass(frozen=True)
class RoutedPrompts:
    queries: PromptQueries
    sent: list[dict]  # per query: {'points': [[x, y], ...], 'labels': [...], 'box': [x0, y0, x1, y1] | None}


def sends_negatives(negatives: str, trained_on_negatives: bool) -> bool:
    if negatives not in NEGATIVES:
        raise ValueError(f"decode.negatives {negatives!r}: expected one of {NEGATIVES}")
    return negatives == "always" or (negatives == "auto" and trained_on_negatives)


def route(prompts: ImagePrompts, negatives: str, trained_on_negatives: bool, image_id: int = -1) -> RoutedPrompts:
    """`prompts` as the segmenter gets them under `negatives`; a query left with no point and no
    box is a PromptError naming the image."""
    keep_negatives = sends_negatives(negatives, trained_on_negatives)
    labels = prompts.labels
    is_box = (labels == BOX_TOP_LEFT) | (labels == BOX_BOTTOM_RIGHT)
    has_box = bool(is_box.any())
    q = len(labels)
    rows, boxes, sent = [], np.zeros((q, 4), np.float32), []
    for i in range(q):
        keep = (labels[i] != PAD) & ~is_box[i]
        if not keep_negatives:
            keep &= labels[i] != LABEL_NEGATIVE
        pts, labs = prompts.points[i][keep], labels[i][keep]
        box = None
        if is_box[i].any():
            box = np.concatenate([prompts.points[i][labels[i] == BOX_TOP_LEFT][0], prompts.points[i][labels[i] == BOX_BOTTOM_RIGHT][0]])
            boxes[i] = box
        if box is None and len(labs) == 0:
            raise PromptError(f"image {image_id} query {i}: no prompt left under decode.negatives={negatives!r} "
                              "(the sampler gave it only negatives); use decode.negatives: always or prompt_mode points+box")
        rows.append((pts, labs))
        sent.append({"points": pts.tolist(), "labels": [int(v) for v in labs], "box": None if box is None else box.tolist()})
    n = max((len(lab) for _, lab in rows), default=0)
    points = np.full((q, n, 2), -1.0, np.float32)
    out_labels = np.full((q, n), PAD, np.int64)
    for i, (pts, labs) in enumerate(rows):
        points[i, : len(labs)], out_labels[i, : len(labs)] = pts, labs
    return RoutedPrompts(PromptQueries(points, out_labels, boxes if has_box else None), sent)


def points_sent_counts(entries: list[dict]) -> dict:
    """{positive, negative, box} totals over entries that record `points_sent`."""
    pos = neg = box = 0
    for e in entries:
        sent = e.get("points_sent")
        if sent is None:
            continue
        pos += sum(1 for v in sent["labels"] if v == 1)
        neg += sum(1 for v in sent["labels"] if v == 0)
        box += sent["box"] is not None
    return {"positive": pos, "negative": neg, "box": box}
