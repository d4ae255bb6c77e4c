"""Prompt tensors for one image: every instance is one query of a single decoder call.

Per query, in this order: the box corners (labels 2 = top-left, 3 = bottom-right, from the
instance's amodal XYWH box as x0, y0, x0 + w, y0 + h) when the prompt mode has a box, then
the sampler's points (labels 1 / 0, best first) when it has points. Queries are padded to
the longest with (-1, -1) / label -1, EfficientSAM's own padding. No query may carry more
than the decoder reads (`MAX_DECODER_POINTS`): EfficientSAM would silently cut the list,
so an excess is an error here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.datasets.record import Instance
from pipeline.errors import VlmsamError
from pipeline.prompt_limits import MAX_DECODER_POINTS, PROMPT_MODES, uses_box

BOX_TOP_LEFT, BOX_BOTTOM_RIGHT, PAD = 2, 3, -1


class PromptError(VlmsamError, ValueError):
    """Prompts that cannot reach the decoder as given; the message names the file and record."""


@dataclass(frozen=True)
class InstancePoints:
    """The sampler's points of one instance, best first."""

    xy: np.ndarray  # float32 [n, 2] original-image pixels
    labels: np.ndarray  # int64 [n] 1 positive, 0 negative
    fallback: str


class PointIndex:
    """The points table grouped by (image_id, gt_id)."""

    def __init__(self, table: pa.Table, source: str | os.PathLike):
        self.source = str(source)
        cols = {n: table.column(n).to_numpy(zero_copy_only=False) for n in ("image_id", "gt_id", "rank", "x", "y", "label")}
        fallback = np.asarray(table.column("fallback").to_pylist(), dtype=object)
        order = np.lexsort((cols["rank"], cols["gt_id"], cols["image_id"]))
        img, gt = cols["image_id"][order], cols["gt_id"][order]
        xy = np.stack([cols["x"][order], cols["y"][order]], axis=1).astype(np.float32)
        labels = cols["label"][order].astype(np.int64)
        fallback = fallback[order]
        starts = np.flatnonzero(np.r_[True, (img[1:] != img[:-1]) | (gt[1:] != gt[:-1])])
        ends = np.r_[starts[1:], len(order)]
        self._groups: dict[tuple[int, int], InstancePoints] = {}
        for s, e in zip(starts, ends):
            self._groups[(int(img[s]), int(gt[s]))] = InstancePoints(xy[s:e], labels[s:e], str(fallback[s] or ""))

    def keys(self) -> set[tuple[int, int]]:
        return set(self._groups)

    def get(self, image_id: int, gt_id: int) -> InstancePoints:
        key = (int(image_id), int(gt_id))
        if key not in self._groups:
            raise PromptError(
                f"{self.source}: no points for image {image_id} instance {gt_id} "
                "(the points file was made for another dataset or subset; re-run the sample stage)"
            )
        return self._groups[key]


@dataclass(frozen=True)
class ImagePrompts:
    """Decoder inputs of one image: Q queries of N points each."""

    points: np.ndarray  # float32 [Q, N, 2]
    labels: np.ndarray  # int64 [Q, N]
    fallbacks: tuple[str, ...]  # per query: the sampler's fallback reason ('' when none)


def box_corners(box_xywh) -> tuple[np.ndarray, np.ndarray]:
    """An XYWH box as EfficientSAM box corners: points [2, 2] and labels [2, 3]."""
    x, y, w, h = (float(v) for v in box_xywh)
    return (np.array([[x, y], [x + w, y + h]], dtype=np.float32), np.array([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT]))


def image_prompts(
    image_id: int,
    instances: tuple[Instance, ...],
    prompt_mode: str,
    points: PointIndex | None,
) -> ImagePrompts:
    """Prompt tensors for all `instances` of one image under `prompt_mode`."""
    if prompt_mode not in PROMPT_MODES:
        raise PromptError(f"prompt_mode {prompt_mode!r}: expected one of {PROMPT_MODES}")
    with_box, with_points = uses_box(prompt_mode), prompt_mode != "box"
    per_query, fallbacks = [], []
    for inst in instances:
        xy, labels, fallback = [], [], ""
        if with_box:
            bxy, blab = box_corners(inst.bbox)
            xy.append(bxy)
            labels.append(blab)
        if with_points:
            if points is None:
                raise PromptError(f"prompt mode {prompt_mode!r} needs the points file")
            p = points.get(image_id, inst.id)
            xy.append(p.xy)
            labels.append(p.labels)
            fallback = p.fallback
        q_xy, q_labels = np.concatenate(xy), np.concatenate(labels)
        if len(q_labels) > MAX_DECODER_POINTS:
            origin = points.source if points is not None else "prompts"
            raise PromptError(
                f"{origin}: image {image_id} instance {inst.id} has {len(q_labels)} prompt points in mode "
                f"{prompt_mode!r}, but EfficientSAM reads at most {MAX_DECODER_POINTS} (a box takes 2); "
                "re-run the sample stage with the same prompt_mode"
            )
        if len(q_labels) == 0:
            raise PromptError(f"{points.source if points else 'prompts'}: image {image_id} instance {inst.id} has no prompt points")
        per_query.append((q_xy, q_labels))
        fallbacks.append(fallback)
    n = max((len(lab) for _, lab in per_query), default=0)
    pts = np.full((len(per_query), n, 2), -1.0, dtype=np.float32)
    labs = np.full((len(per_query), n), PAD, dtype=np.int64)
    for q, (q_xy, q_labels) in enumerate(per_query):
        pts[q, : len(q_labels)] = q_xy
        labs[q, : len(q_labels)] = q_labels
    return ImagePrompts(pts, labs, tuple(fallbacks))
