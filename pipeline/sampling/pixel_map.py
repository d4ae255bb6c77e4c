"""Token attention -> maps in original-image pixels.

Coordinates: pixel (i, j) covers [j, j + 1) x [i, i + 1); a token with rect (x0, y0, x1, y1)
covers the pixels (or grid cells) whose centre lies in [x0, x1) x [y0, y1).

Steps, each vectorised over tokens (no per-token Python loop):
1. `token_values`: per instance, the chosen layers' maps are normalised per view (and layer) so
   coarse and fine maps are comparable, then averaged over layers with the layer weights.
2. `paint`: each view's token values are painted over their rects on a `Grid` (the search
   region at reduced resolution). A view whose rects form a lattice (`Lattice`: every view
   that transformers' feature packing gives) is a gather: each grid row and column is mapped
   to the lattice row and column whose span holds its centre. Any other view is painted with
   a 2-D difference array (an integral image in reverse): 4 signed entries per token, two
   cumulative sums, and overlapping rects of a view average. The views are then mixed per cell
   with the view weights over the views that cover the cell. Cells no token covers are NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.attention.cache import VIEW_BASE, VIEW_HIGHRES, TokenPlacement

VIEWS = (VIEW_BASE, VIEW_HIGHRES)  # the order of SampleParams.view_weights: coarse, fine


@dataclass(frozen=True)
class Grid:
    """A pixel window [x0, x0 + cols*step_x) x [y0, y0 + rows*step_y) cut into rows x cols cells."""

    x0: float
    y0: float
    step_x: float
    step_y: float
    rows: int
    cols: int

    @classmethod
    def over(cls, x0: float, y0: float, x1: float, y1: float, max_cells: int) -> "Grid":
        """Cells of at least one pixel, at most `max_cells` along the longer side of the window."""
        w, h = max(x1 - x0, 1e-6), max(y1 - y0, 1e-6)
        step = max(1.0, max(w, h) / max_cells)
        cols, rows = max(1, round(w / step)), max(1, round(h / step))
        return cls(float(x0), float(y0), w / cols, h / rows, int(rows), int(cols))

    @property
    def step(self) -> float:
        """Mean cell side in pixels."""
        return 0.5 * (self.step_x + self.step_y)

    def to_pixels(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cell indices -> (x, y) of the cell centres in image pixels."""
        x = self.x0 + (np.asarray(cols, np.float64) + 0.5) * self.step_x
        y = self.y0 + (np.asarray(rows, np.float64) + 0.5) * self.step_y
        return x, y


def search_region(box_xywh, width: int, height: int, enlarge: float) -> tuple[float, float, float, float]:
    """The XYWH box scaled by `enlarge` about its centre, clipped to the image, as x0, y0, x1, y1."""
    x, y, w, h = (float(v) for v in box_xywh)
    cx, cy, hw, hh = x + w / 2, y + h / 2, w * enlarge / 2, h * enlarge / 2
    return max(0.0, cx - hw), max(0.0, cy - hh), min(float(width), cx + hw), min(float(height), cy + hh)


@dataclass(frozen=True)
class Lattice:
    """A view's rects as a lattice: the x-span of a token depends only on its column, the y-span
    only on its row, and the spans of distinct columns (rows) are disjoint. Columns and rows
    are sorted by position; `token[r, c]` is the placement index of the token there, -1 where
    the view has none, with one more row and column of -1 at the end: lattice line -1 (a grid
    cell outside every line) finds no token."""

    col_lo: np.ndarray  # float64 [nc]
    col_hi: np.ndarray  # float64 [nc]
    row_lo: np.ndarray  # float64 [nr]
    row_hi: np.ndarray  # float64 [nr]
    token: np.ndarray  # int64 [nr + 1, nc + 1]

    @staticmethod
    def _axis(key: np.ndarray, lo: np.ndarray, hi: np.ndarray):
        """Per distinct `key`: its one span, sorted by position, and each token's place in that
        order; None when a key has two spans or two spans overlap."""
        keys, inverse = np.unique(key, return_inverse=True)
        first = np.zeros(keys.size, np.int64)
        first[inverse[::-1]] = np.arange(key.size)[::-1]  # a token of each key
        span_lo, span_hi = lo[first], hi[first]
        if not (np.array_equal(lo, span_lo[inverse]) and np.array_equal(hi, span_hi[inverse])):
            return None
        order = np.argsort(span_lo, kind="stable")
        if np.any(span_hi[order][:-1] > span_lo[order][1:]):
            return None
        place = np.empty(keys.size, np.int64)
        place[order] = np.arange(keys.size)
        return span_lo[order], span_hi[order], place[inverse]

    @classmethod
    def of(cls, row: np.ndarray, col: np.ndarray, rect: np.ndarray, index: np.ndarray) -> "Lattice | None":
        """The lattice of the tokens `index` of a placement at grid (`row`, `col`) with `rect`
        [n, 4], or None when the rects do not form one (or two tokens share a grid place)."""
        cols = cls._axis(col, rect[:, 0], rect[:, 2])
        rows = cls._axis(row, rect[:, 1], rect[:, 3])
        if cols is None or rows is None:
            return None
        token = np.full((rows[0].size + 1, cols[0].size + 1), -1, np.int64)
        token[rows[2], cols[2]] = index
        if np.count_nonzero(token >= 0) != row.size:
            return None
        return cls(cols[0], cols[1], rows[0], rows[1], token)


@dataclass(frozen=True)
class ViewTokens:
    """The tokens of one view: their indices into the placement, their rects (float64) and,
    when the rects form one, their lattice."""

    view: int
    index: np.ndarray  # int [n]
    rect: np.ndarray  # float64 [n, 4]
    lattice: Lattice | None = None

    @property
    def side(self) -> float:
        """Median shorter side of the view's tokens, in pixels."""
        return float(np.median(np.minimum(self.rect[:, 2] - self.rect[:, 0], self.rect[:, 3] - self.rect[:, 1])))


def split_views(placement: TokenPlacement) -> list[ViewTokens]:
    """The placement's tokens grouped by view, in VIEWS order (views without tokens left out)."""
    view = np.asarray(placement.view)
    unknown = sorted(set(np.unique(view).tolist()) - set(VIEWS))
    if unknown:
        raise ValueError(f"token views {unknown} are not one of {VIEWS} (base, high-resolution)")
    rect = np.asarray(placement.rect, np.float64)
    row, col = np.asarray(placement.row), np.asarray(placement.col)
    out = []
    for v in VIEWS:
        index = np.flatnonzero(view == v)
        if index.size:
            out.append(ViewTokens(v, index, rect[index], Lattice.of(row[index], col[index], rect[index], index)))
    return out


def finest_view(views: list[ViewTokens]) -> ViewTokens:
    """The view with the smallest tokens (median shorter side)."""
    return min(views, key=lambda t: t.side)


def finest_token_side(views: list[ViewTokens]) -> float:
    """Median shorter side (pixels) of the tokens of the view with the smallest tokens."""
    return max(min(t.side for t in views), 0.0) if views else 0.0


def token_values(
    maps: np.ndarray,
    layer_rows: list[int],
    layer_weights: np.ndarray,
    views: list[ViewTokens],
    view_norm: str,
) -> np.ndarray:
    """Per-instance token maps [K, L, T] -> one normalised map per instance [K, T] (float64).

    For every view and chosen layer the values are divided by their mean ('mean') or max
    ('max') over that view's tokens (a view of zeros stays zero); the layers are then averaged
    with `layer_weights`. NaN in the input stays NaN.
    """
    maps = np.asarray(maps, np.float64)[:, layer_rows, :]  # [K, L', T]
    weights = np.asarray(layer_weights, np.float64)
    weights = weights / weights.sum()
    out = np.zeros((maps.shape[0], maps.shape[2]), np.float64)
    for t in views:
        part = maps[:, :, t.index]  # [K, L', n]
        scale = part.mean(axis=2) if view_norm == "mean" else part.max(axis=2)  # [K, L']
        safe = np.where(scale > 0, scale, 1.0)  # NaN stays NaN, zero maps stay zero
        out[:, t.index] = np.einsum("kln,l->kn", part / safe[:, :, None], weights)
    return out


def _cell_edges(lo: np.ndarray, hi: np.ndarray, origin: float, step: float):
    """First and one-past-last cell index (as floats, unclipped) whose centre lies in [lo, hi)."""
    return np.ceil((lo - origin) / step - 0.5), np.ceil((hi - origin) / step - 0.5)


def _cell_span(lo: np.ndarray, hi: np.ndarray, origin: float, step: float, n: int):
    """First and one-past-last cell index whose centre lies in [lo, hi), clipped to [0, n]."""
    first, last = _cell_edges(lo, hi, origin, step)
    return np.clip(first, 0, n).astype(np.int64), np.clip(last, 0, n).astype(np.int64)


def _lattice_cells(lo: np.ndarray, hi: np.ndarray, origin: float, step: float, n: int) -> np.ndarray:
    """Per cell of one grid axis, the lattice line whose span holds its centre (-1: none).

    The lines' cell spans (`_cell_edges`, as the difference array paints them) are disjoint and
    in order, so a cell belongs to the last line starting at or before it, if it ends after it.
    """
    first, last = _cell_edges(lo, hi, origin, step)
    cell = np.arange(n)
    line = np.searchsorted(first, cell, side="right") - 1
    return np.where((line >= 0) & (cell < last[line]), line, -1)  # last[-1] for line -1: masked


def _lattice_tokens(tokens: ViewTokens, grid: Grid) -> np.ndarray:
    """int [rows, cols]: the placement index of the token of a lattice view covering each cell,
    -1 where none does."""
    lat = tokens.lattice
    r = _lattice_cells(lat.row_lo, lat.row_hi, grid.y0, grid.step_y, grid.rows)
    c = _lattice_cells(lat.col_lo, lat.col_hi, grid.x0, grid.step_x, grid.cols)
    return np.take(np.take(lat.token, r, axis=0), c, axis=1)


def _paint_view(values: np.ndarray, tokens: ViewTokens, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Sum [K, rows, cols] of the values of the tokens covering each cell, and their count."""
    rows, cols = grid.rows, grid.cols
    c0, c1 = _cell_span(tokens.rect[:, 0], tokens.rect[:, 2], grid.x0, grid.step_x, cols)
    r0, r1 = _cell_span(tokens.rect[:, 1], tokens.rect[:, 3], grid.y0, grid.step_y, rows)
    keep = np.flatnonzero((c1 > c0) & (r1 > r0))
    k = values.shape[0]
    if keep.size == 0:
        return np.zeros((k, rows, cols)), np.zeros((rows, cols))
    c0, c1, r0, r1 = c0[keep], c1[keep], r0[keep], r1[keep]
    width, n_cells = cols + 1, (rows + 1) * (cols + 1)
    corners = np.concatenate([r0 * width + c0, r0 * width + c1, r1 * width + c0, r1 * width + c1])
    signs = np.repeat(np.array([1.0, -1.0, -1.0, 1.0]), keep.size)

    def integrate(flat: np.ndarray, n_maps: int) -> np.ndarray:
        diff = flat.reshape(n_maps, rows + 1, width)
        return diff.cumsum(axis=1).cumsum(axis=2)[:, :rows, :cols]

    # the count of covering tokens is painted as one more map of ones
    v = np.concatenate([values[:, tokens.index[keep]], np.ones((1, keep.size))])  # [K + 1, n]
    flat_idx = (np.arange(k + 1)[:, None] * n_cells + corners).ravel()
    flat_w = (np.tile(v, (1, 4)) * signs).ravel()
    painted = integrate(np.bincount(flat_idx, weights=flat_w, minlength=(k + 1) * n_cells), k + 1)
    return painted[:k], np.rint(painted[k])


def paint(values: np.ndarray, views: list[ViewTokens], grid: Grid, view_weights) -> np.ndarray:
    """Token values [K, T] -> maps [K, rows, cols] (float32) on `grid`; NaN where no token covers.

    Within a view, overlapping rects average; across views, the cell value is the weighted mean
    (`view_weights` in VIEWS order) over the views that cover the cell with a positive weight.
    """
    k = values.shape[0]
    padded = np.concatenate([values, np.zeros((k, 1))], axis=1)  # column T: uncovered cells
    total = np.zeros((k, grid.rows, grid.cols))
    weight = np.zeros((grid.rows, grid.cols))
    for tokens in views:
        w = float(view_weights[VIEWS.index(tokens.view)])
        if w <= 0:
            continue
        if tokens.lattice is not None:
            token = _lattice_tokens(tokens, grid)
            gathered = np.take(padded, token, axis=1)  # index -1 is the zero column
            gathered *= w
            total += gathered
            weight += w * (token >= 0)
            continue
        sums, count = _paint_view(values, tokens, grid)
        covered = count > 0
        total += w * np.where(covered, sums / np.where(covered, count, 1.0), 0.0)
        weight += w * covered
    with np.errstate(invalid="ignore", divide="ignore"):
        out = total / weight  # 0 / 0 = NaN where no view covers
    return out.astype(np.float32)


def smooth(maps: np.ndarray, sigma_cells: float) -> np.ndarray:
    """NaN-aware Gaussian smoothing of maps [K, rows, cols]: NaN cells stay NaN, don't bleed."""
    if sigma_cells <= 0:
        return maps
    valid = np.isfinite(maps)
    ksize = 2 * int(math.ceil(3 * sigma_cells)) + 1

    def blur(a: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(a.astype(np.float32), (ksize, ksize), sigma_cells,
                                borderType=cv2.BORDER_REPLICATE)

    out = np.empty_like(maps)
    for i in range(maps.shape[0]):
        if valid[i].all():
            out[i] = blur(maps[i])
            continue
        num, den = blur(np.where(valid[i], maps[i], 0)), blur(valid[i])
        with np.errstate(invalid="ignore", divide="ignore"):
            out[i] = np.where(valid[i], num / np.where(den > 0, den, 1), np.nan)
    return out
