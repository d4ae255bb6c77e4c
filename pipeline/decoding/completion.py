"""Training-free amodal completion: from a visible mask, its occluders and its box.

Every method is defined here and only here. Notation, all boolean HxW masks:
    V  the instance's visible mask (decoded, or ground truth under the modal-given protocol)
    O  the union of the visible masks of the instance's occluders (see `occluders.py`)
    B  the instance's amodal box (the prompt box), rasterised by `box_mask`
    H(V) the filled convex hull of V, by `convex_hull`

    visible        A = V                         baseline: no completion
    hull           A = H(V)                      fills concavities, ignores occluders
    occluder_hull  A = V ∪ (H(V) ∩ O ∩ B)        hull grown only where something occludes
    occluder_box   A = V ∪ (O ∩ B)               every occluded pixel of the box

With no occluders (O empty) `occluder_hull` and `occluder_box` return V. An empty V stays
empty for `visible`/`hull`/`occluder_hull`; `occluder_box` still returns O ∩ B.
The fifth value of the `completion` parameter, `decoder`, is not a geometric method: a
second, learned mask decoder predicts the amodal mask (see `sam.py`).

    exemplar       A = V ∪ (P ∩ O)               P: an unoccluded instance of the same class
                                                 (from the same run) rotated / flipped /
                                                 scaled into B; needs the whole split, so it
                                                 is a second pass (`exemplar_pass.py`) over
                                                 masks first completed by its fallback
"""

from __future__ import annotations

import cv2
import numpy as np

TRAINING_FREE = ("visible", "hull", "occluder_hull", "occluder_box")
DECODER = "decoder"
EXEMPLAR = "exemplar"
COMPLETIONS = (DECODER, *TRAINING_FREE, EXEMPLAR)
NEEDS_OCCLUDERS = ("occluder_hull", "occluder_box")


def uses_occluders(completion: str) -> bool:
    """Whether `completion` needs each instance's occluders."""
    return completion in NEEDS_OCCLUDERS or completion == EXEMPLAR


def box_pixels(box_xywh, height: int, width: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), end exclusive, of an XYWH box: columns floor(x) .. ceil(x + w) - 1,
    rows likewise, clipped to the frame."""
    x, y, w, h = (float(v) for v in box_xywh)
    x0, y0 = max(int(np.floor(x)), 0), max(int(np.floor(y)), 0)
    x1, y1 = min(int(np.ceil(x + w)), width), min(int(np.ceil(y + h)), height)
    return x0, y0, x1, y1


def box_mask(box_xywh, height: int, width: int) -> np.ndarray:
    """Pixels of an XYWH box (`box_pixels`) as an HxW mask."""
    x0, y0, x1, y1 = box_pixels(box_xywh, height, width)
    out = np.zeros((height, width), dtype=bool)
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = True
    return out


def convex_hull(mask: np.ndarray) -> np.ndarray:
    """Filled convex hull of all foreground pixels (pixel centres; boundary pixels included)."""
    mask = np.asarray(mask, dtype=bool)
    out = np.zeros(mask.shape, dtype=np.uint8)
    if not mask.any():
        return out.astype(bool)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.convexHull(np.concatenate(contours, axis=0))
    cv2.fillConvexPoly(out, hull, 1)
    return out.astype(bool) | mask


def complete(method: str, visible: np.ndarray, occluders: np.ndarray, box_xywh) -> np.ndarray:
    """Amodal mask of one instance by a training-free `method` (see the module docstring)."""
    visible = np.asarray(visible, dtype=bool)
    if method == "visible":
        return visible.copy()
    if method == "hull":
        return convex_hull(visible)
    if method not in NEEDS_OCCLUDERS:
        raise ValueError(f"unknown training-free completion {method!r}; expected one of {TRAINING_FREE}")
    occluders = np.asarray(occluders, dtype=bool)
    if occluders.shape != visible.shape:
        raise ValueError(f"occluder mask shape {occluders.shape} != visible mask shape {visible.shape}")
    region = occluders & box_mask(box_xywh, *visible.shape)
    if method == "occluder_hull":
        region &= convex_hull(visible)
    return visible | region
