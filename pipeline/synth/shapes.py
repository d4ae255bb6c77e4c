"""Non-convex object silhouettes: random polygons of a few kinds, rasterised and smoothed."""

from __future__ import annotations

import cv2
import numpy as np

_SUBPIXEL_BITS = 4  # cv2.fillPoly fixed-point shift


def _blob(rng: np.random.Generator) -> np.ndarray:
    """A lumpy closed curve: radius = 1 + a sum of low-frequency cosines."""
    t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    r = np.ones_like(t)
    for k in range(2, 6):
        r += rng.uniform(0.06, 0.2) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    r = np.clip(r, 0.35, None)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _star(rng: np.random.Generator) -> np.ndarray:
    n = int(rng.integers(5, 9))
    inner = rng.uniform(0.45, 0.68)
    t = np.linspace(0, 2 * np.pi, 2 * n, endpoint=False)
    r = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner) * rng.uniform(0.92, 1.08, 2 * n)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _ell(rng: np.random.Generator) -> np.ndarray:
    """An L: a long bar and a foot, each of random thickness."""
    a, b = rng.uniform(0.35, 0.6), rng.uniform(0.35, 0.6)
    pts = [(-1, -1), (-1 + a, -1), (-1 + a, 1 - b), (1, 1 - b), (1, 1), (-1, 1)]
    return np.array(pts, float)


def _arc(rng: np.random.Generator) -> np.ndarray:
    """A C: a thick ring with a gap (banana-like when the gap is wide)."""
    gap = rng.uniform(0.5, 1.6)
    inner = rng.uniform(0.45, 0.7)
    t = np.linspace(gap / 2, 2 * np.pi - gap / 2, 48)
    outer_pts = np.stack([np.cos(t), np.sin(t)], 1)
    inner_pts = inner * outer_pts[::-1]
    return np.concatenate([outer_pts, inner_pts])


def _cross(rng: np.random.Generator) -> np.ndarray:
    """A plus / T: a horizontal bar with a vertical bar through or beside its middle."""
    h, v = rng.uniform(0.3, 0.55), rng.uniform(0.3, 0.55)
    top = -1.0 if rng.random() < 0.5 else -h  # -h gives a T
    pts = [(-1, -h), (-v, -h), (-v, top), (v, top), (v, -h), (1, -h), (1, h), (v, h), (v, 1),
           (-v, 1), (-v, h), (-1, h)]
    return np.array(pts, float)


_KINDS = {"blob": _blob, "star": _star, "ell": _ell, "arc": _arc, "cross": _cross}


def outline(kind: str, rng: np.random.Generator) -> np.ndarray:
    """The polygon (n x 2) of a random shape of `kind`, stretched to an aspect of 0.6-1.0."""
    pts = _KINDS[kind](rng)
    return pts * np.array([1.0, rng.uniform(0.6, 1.0)])


def rasterise(pts: np.ndarray, angle: float, size: float, fit_extent: bool = True) -> np.ndarray:
    """A bool mask (tight crop) of polygon `pts` rotated by `angle` (radians).

    fit_extent: the rotated polygon is scaled so its larger extent is `size` pixels; else
    `pts` are taken as already normalised (unit radius) and scaled by size / 2, so one shape
    keeps its size in every rotation. Filled with sub-pixel precision and smoothed (Gaussian
    blur, threshold 0.5) so corners are rounded like products.
    """
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pts = pts @ rot.T
    if fit_extent:
        pts = pts / np.abs(pts).max()
    pts = pts * (size / 2)
    margin = 3
    pts = pts - pts.min(0) + margin
    w, h = (np.ceil(pts.max(0)) + margin).astype(int)
    canvas = np.zeros((h, w), np.uint8)
    fixed = np.round(pts * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(canvas, [fixed], 255, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    sigma = max(1.0, size / 60)
    smooth = cv2.GaussianBlur(canvas, (0, 0), sigma)
    mask = smooth >= 128
    ys, xs = np.nonzero(mask)
    return mask[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]


def silhouette(kind: str, size: float, rng: np.random.Generator) -> np.ndarray:
    """A bool mask (tight crop, about `size` pixels across) of a random shape of `kind`,
    randomly rotated (`outline`, `rasterise`)."""
    pts = outline(kind, rng)
    return rasterise(pts, rng.uniform(0, 2 * np.pi), size)
