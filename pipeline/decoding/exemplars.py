"""Class exemplars: a class's unoccluded instances as the shape prior of its occluded ones.

An exemplar is the tight crop of one instance's visible mask. Its poses are rotations
(0, step, ... < 360 degrees) of it and of its mirror image. For each pose the tight box of
the rotated shape is known in closed form (the rotated corners of the pixels on its convex
hull), and its occupancy in box-normalised coordinates is rendered once on a GRID x GRID
grid (`ClassBank`, built once per class).

Placing an exemplar for an occluded instance with visible mask V, occluders O and amodal
box B (all cropped to B's pixels):
  1. poses whose box matches B: each side within `size_tolerance` (relative) of B's, or, with
     `scale`, B's aspect within it (the pose is scaled to B's area);
  2. each matching pose is ranked on the grid by the soft IoU of its occupancy and V, both
     outside O;
  3. the best RANKED_AT_FIT_SIDE poses are rendered into B sampled at most FIT_SIDE pixels
     across (nearest samples of V and O) and scored by their fit
     |P ∩ V \\ O| / |(P ∪ V) \\ O|;
  4. the best one is used when its fit reaches `min_fit`: A = V ∪ (P ∩ O), with P rendered
     at full resolution over the occluders' extent in B only.
Rendering maps the pose's rotated tight box exactly onto B (bilinear, threshold 0.5), so the
placed shape always spans the box, as an amodal mask does.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

GRID = 32  # side of the box-normalised grid on which poses are ranked
FIT_SIDE = 128  # the best grid poses are re-scored with the box at most this many pixels across
RANKED_AT_FIT_SIDE = 3  # how many
GRID_SOURCE_SIDE = 3 * GRID  # exemplars are area-downsampled to this long side to render grids

# Why an instance kept its fallback completion (recorded as '<fallback>:<reason>').
NO_OCCLUDERS = "no_occluders"  # nothing occludes it inside its box: the amodal mask is V
NO_VISIBLE = "no_visible"  # no visible pixel outside the occluders to fit a shape to
NO_EXEMPLAR = "no_exemplar"  # its class has no unoccluded instance in the run
NO_POSE = "no_pose"  # no pose of any exemplar matches its box
LOW_FIT = "low_fit"  # the best placement's fit is below min_fit


@dataclass(frozen=True)
class Exemplar:
    """One unoccluded instance's visible mask, cropped to its tight box."""

    gt_id: int
    mask: np.ndarray  # bool, tight crop


@dataclass(frozen=True)
class Placement:
    """The outcome of placing a class's exemplars into one instance's box.

    added: when an exemplar was used, the pixels it adds to V, (P ∩ O) \\ V, as a bool crop
    whose top-left pixel is `added_origin` (x, y) in the box crop; else None and `reason`
    says why. fit / gt_id / angle / flip describe the best placement found (None when none
    was scored).
    """

    added: np.ndarray | None
    reason: str | None
    added_origin: tuple[int, int] = (0, 0)
    fit: float | None = None
    gt_id: int | None = None
    angle: float | None = None
    flip: bool | None = None


def _hull_corners(mask: np.ndarray) -> np.ndarray:
    """(n, 2) x, y of the four corners of every pixel on the convex hull of `mask`."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.convexHull(np.concatenate(contours, axis=0)).reshape(-1, 2).astype(np.float64)
    offsets = np.array([[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]])
    return (hull[:, None, :] + offsets[None]).reshape(-1, 2)


def _rotations(shape: tuple[int, int], angles_deg: np.ndarray, flip: bool) -> np.ndarray:
    """(n, 3, 3) maps from a crop's pixel centres to each pose's frame: mirror (optional),
    then rotate about the crop's centre by each angle."""
    h, w = shape
    mirror = np.array([[-1.0, 0, w - 1], [0, 1, 0], [0, 0, 1]]) if flip else np.eye(3)
    centre = np.array([[1.0, 0, -(w - 1) / 2], [0, 1, -(h - 1) / 2], [0, 0, 1]])
    a = np.deg2rad(np.asarray(angles_deg, dtype=float))
    rotate = np.zeros((a.size, 3, 3))
    rotate[:, 0, 0], rotate[:, 0, 1], rotate[:, 1, 0], rotate[:, 1, 1] = np.cos(a), -np.sin(a), np.sin(a), np.cos(a)
    rotate[:, 2, 2] = 1.0
    return rotate @ (centre @ mirror)


def _onto(box_lo: np.ndarray, box_size: np.ndarray, target_lo, target_size) -> np.ndarray:
    """(..., 3, 3) maps of pose-frame boxes (lo, size: (..., 2)) onto a target box
    (continuous coordinates)."""
    box_lo, box_size = np.asarray(box_lo, float), np.asarray(box_size, float)
    scale = np.asarray(target_size, float) / box_size
    out = np.zeros(box_lo.shape[:-1] + (3, 3))
    out[..., 0, 0], out[..., 1, 1], out[..., 2, 2] = scale[..., 0], scale[..., 1], 1.0
    out[..., :2, 2] = np.asarray(target_lo, float) - box_lo * scale
    return out


def _render(source: np.ndarray, to_output: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Warp a mask image (float32 or uint8) by the 3x3 map `to_output` into out_h x out_w, bilinear."""
    return cv2.warpAffine(source, to_output[:2], (out_w, out_h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)


class ClassBank:
    """All poses of one class's exemplars, precomputed once: their boxes and grid occupancies."""

    def __init__(self, exemplars: list[Exemplar], angle_step: float, flip: bool):
        if not exemplars:
            raise ValueError("a class bank needs at least one exemplar")
        self.exemplars = exemplars
        self._sources = [ex.mask.astype(np.uint8) * 255 for ex in exemplars]  # rendered (bilinear, >= 128)
        angles = np.arange(0.0, 360.0, angle_step)
        flips = (False, True) if flip else (False,)
        index, pose_angle, pose_flip, lo, size, grids = [], [], [], [], [], []
        for k, ex in enumerate(exemplars):
            mask = ex.mask.astype(np.float32)
            h, w = mask.shape
            shrink = min(1.0, GRID_SOURCE_SIDE / max(h, w))
            sh, sw = max(1, round(h * shrink)), max(1, round(w * shrink))
            small = cv2.resize(mask, (sw, sh), interpolation=cv2.INTER_AREA)
            # small pixel centres -> full pixel centres
            from_small = np.array([[w / sw, 0, 0.5 * w / sw - 0.5], [0, h / sh, 0.5 * h / sh - 0.5], [0, 0, 1]])
            corners = _hull_corners(ex.mask)
            for f in flips:
                poses = _rotations((h, w), angles, f)
                turned = np.einsum("nc,aic->ani", corners, poses[:, :2, :2]) + poses[:, None, :2, 2]
                box_lo, box_hi = turned.min(1), turned.max(1)
                to_grid = _onto(box_lo, box_hi - box_lo, (-0.5, -0.5), (GRID, GRID)) @ poses @ from_small
                grids.extend(_render(small, m, GRID, GRID) for m in to_grid)
                index.extend([k] * angles.size)
                pose_angle.extend(angles)
                pose_flip.extend([f] * angles.size)
                lo.extend(box_lo)
                size.extend(box_hi - box_lo)
        self.index = np.asarray(index)
        self.angle = np.asarray(pose_angle)
        self.flip = np.asarray(pose_flip)
        self.box_lo = np.asarray(lo)
        self.box_size = np.asarray(size)  # (n, 2) width, height of each pose's tight box
        self.grid = np.clip(np.stack(grids), 0.0, 1.0).astype(np.float32)

    def matching(self, box_w: float, box_h: float, tolerance: float, scale: bool) -> np.ndarray:
        """Indices of the poses whose box matches a box_w x box_h box (see the module doc)."""
        size = self.box_size
        if scale:
            size = size * np.sqrt(box_w * box_h / (size[:, 0] * size[:, 1]))[:, None]
        err = np.abs(size / np.array([box_w, box_h]) - 1.0)
        return np.flatnonzero((err <= tolerance).all(axis=1))

    def render(self, pose: int, target_lo, target_size, out_h: int, out_w: int) -> np.ndarray:
        """Pose `pose`, its tight box mapped onto the continuous target box (output pixel
        coordinates), as a bool out_h x out_w mask."""
        ex = self.exemplars[self.index[pose]]
        to_out = _onto(self.box_lo[pose], self.box_size[pose], target_lo, target_size) @ _rotations(
            ex.mask.shape, self.angle[pose:pose + 1], bool(self.flip[pose]))[0]
        return _render(self._sources[self.index[pose]], to_out, out_h, out_w) >= 128

    def place(self, visible: np.ndarray, occluders: np.ndarray, box_xywh, box_origin: tuple[int, int],
              tolerance: float, scale: bool, min_fit: float) -> Placement:
        """Place this class's exemplars into one instance's box.

        visible, occluders: bool crops of V and O over the box's pixels, whose top-left pixel
        is `box_origin` (x0, y0) in the frame; box_xywh: the continuous amodal box.
        """
        if not occluders.any():
            return Placement(None, NO_OCCLUDERS)
        outside = ~occluders
        seen = visible & outside
        if not seen.any():
            return Placement(None, NO_VISIBLE)
        bx, by, bw, bh = (float(v) for v in box_xywh)
        poses = self.matching(bw, bh, tolerance, scale) if bw > 0 and bh > 0 else np.zeros(0, dtype=int)
        if poses.size == 0:
            return Placement(None, NO_POSE)
        out_h, out_w = visible.shape
        target_lo = np.array([bx - box_origin[0] - 0.5, by - box_origin[1] - 0.5])
        target_size = np.array([bw, bh])

        # the box at FIT_SIDE resolution (nearest samples) for ranking
        shrink = min(1.0, FIT_SIDE / max(out_h, out_w))
        fh, fw = max(1, round(out_h * shrink)), max(1, round(out_w * shrink))
        factor = np.array([fw / out_w, fh / out_h])
        seen_f, visible_f, outside_f = (
            cv2.resize(m.view(np.uint8), (fw, fh), interpolation=cv2.INTER_NEAREST).view(bool)
            for m in (seen, visible, outside))
        seen_grid = cv2.resize(seen_f.astype(np.float32), (GRID, GRID), interpolation=cv2.INTER_AREA)
        outside_grid = cv2.resize(outside_f.astype(np.float32), (GRID, GRID), interpolation=cv2.INTER_AREA)
        shapes = self.grid[poses] * outside_grid
        inter = np.minimum(shapes, seen_grid).sum(axis=(1, 2))
        union = np.maximum(shapes, seen_grid).sum(axis=(1, 2))
        ranked = poses[np.argsort(-(inter / np.maximum(union, 1e-9)), kind="stable")[:RANKED_AT_FIT_SIDE]]
        fits = [_fit(self.render(int(p), (target_lo + 0.5) * factor - 0.5, target_size * factor, fh, fw),
                     seen_f, visible_f, outside_f) for p in ranked]
        best = int(ranked[int(np.argmax(fits))])
        found = dict(fit=float(max(fits)), gt_id=int(self.exemplars[self.index[best]].gt_id),
                     angle=float(self.angle[best]), flip=bool(self.flip[best]))
        if found["fit"] < min_fit:
            return Placement(None, LOW_FIT, **found)
        rows, cols = np.flatnonzero(occluders.any(axis=1)), np.flatnonzero(occluders.any(axis=0))
        ya, yb, xa, xb = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        shape = self.render(best, target_lo - (xa, ya), target_size, yb - ya, xb - xa)
        added = shape & occluders[ya:yb, xa:xb] & ~visible[ya:yb, xa:xb]
        return Placement(added, None, (int(xa), int(ya)), **found)


def _fit(shape: np.ndarray, seen: np.ndarray, visible: np.ndarray, outside: np.ndarray) -> float:
    """|P ∩ V \\ O| / |(P ∪ V) \\ O| (1.0 when both are empty)."""
    union = np.count_nonzero((shape | visible) & outside)
    return 1.0 if union == 0 else float(np.count_nonzero(shape & seen)) / union
