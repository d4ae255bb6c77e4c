"""One instance's attention map on its search grid -> point prompts, best first.

Positives: local maxima of the (smoothed) map ('peak') or KMeans cluster centres of its
high-attention cells ('kmeans'), inside the instance's amodal box and never where an
occluder's map is above the instance's. Negatives: peaks of the occluders' maps where they
exceed the instance's own map by the relative margin `occ_margin` ('occluder'), then
low-attention places of the instance's map ('background'), outside the amodal box by default
(`bg_region`), where the target cannot be. Emitted points keep `min_distance` from each other.
Maps that cannot give points fall back to the box centre as one positive, with the reason (see
FALLBACK_REASONS).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from sklearn.cluster import KMeans  # imported here, before run.py limits its OpenMP threads

from pipeline.sampling.params import SampleParams
from pipeline.sampling.pixel_map import Grid, smooth

# why an instance fell back to its box centre ('extract:<reason>' when extract flagged it)
FALLBACK_REASONS = {
    "nan": "the instance's attention maps hold NaN or inf",
    "empty": "no attention inside the search region (no token covers it, or all zero)",
    "flat": "coefficient of variation of the map over the search region below sample.flat_cv",
    "nopeak": "no cell of the map reaches sample.rel_threshold",
    "vetoed": "every cell of the box that reaches sample.rel_threshold is outranked by an occluder's "
              "or a same-category rival's map (sample.pos_margin, sample.contrast)",
}
EXTRACT_PREFIX = "extract:"
CANDIDATES_PER_POINT = 4  # peak_local_max keeps this many of the highest peaks per point wanted


@dataclass
class InstancePoints:
    """Points of one instance, best first (positives, then negatives)."""

    x: np.ndarray  # float64 [n] image pixels
    y: np.ndarray  # float64 [n]
    label: np.ndarray  # int8 [n] 1 positive, 0 negative
    score: np.ndarray  # float32 [n]
    source: list[str]  # per point, one of points_schema.SOURCES
    fallback: str = ""

    def __len__(self) -> int:
        return int(self.x.shape[0])


def fallback_points(box_xywh, reason: str) -> InstancePoints:
    """The box centre as the one positive point, flagged with `reason`."""
    x, y, w, h = (float(v) for v in box_xywh)
    return InstancePoints(
        np.array([x + w / 2]), np.array([y + h / 2]), np.array([1], np.int8),
        np.array([0.0], np.float32), ["fallback"], reason,
    )


def map_fallback(target: np.ndarray, flat_cv: float) -> str:
    """'' when the painted map [rows, cols] can give points, else 'empty' or 'flat'."""
    values = target[np.isfinite(target)]
    if values.size == 0 or values.max() <= 0:
        return "empty"
    mean = values.mean()
    if mean <= 0 or values.std() / mean < flat_cv:
        return "flat"
    return ""


def _normalise(m: np.ndarray, hi: float | None = None) -> np.ndarray | None:
    """(m - lo) / (hi - lo) over the finite cells (NaN elsewhere), lo and hi the map's min and
    max there (`hi` given: the larger of it and the max); None when constant."""
    valid = np.isfinite(m)
    if not valid.any():
        return None
    lo, hi = m[valid].min(), max(m[valid].max(), -np.inf if hi is None else hi)
    if not hi > lo:
        return None
    return (m - lo) / (hi - lo)


class _WindowMean:
    """Mean of a map's finite values in square windows, via integral images."""

    def __init__(self, m: np.ndarray):
        valid = np.isfinite(m)
        self.sum = cv2.integral(np.where(valid, m, 0.0).astype(np.float64), sdepth=cv2.CV_64F)
        self.cnt = cv2.integral(valid.view(np.uint8), sdepth=cv2.CV_32S)
        self.rows, self.cols = m.shape

    def __call__(self, rc: np.ndarray, half: int) -> np.ndarray:
        r, c = rc[:, 0], rc[:, 1]  # cells of the map: the windows need clipping on one side each
        r0, r1 = np.maximum(r - half, 0), np.minimum(r + half + 1, self.rows)
        c0, c1 = np.maximum(c - half, 0), np.minimum(c + half + 1, self.cols)

        def box(t):
            return t[r1, c1] - t[r0, c1] - t[r1, c0] + t[r0, c0]

        return box(self.sum) / np.maximum(box(self.cnt), 1)


def _peaks(n: np.ndarray, min_distance: int, threshold: float, wanted: int) -> np.ndarray:
    """The highest local maxima [k, 2] (row, col) of a normalised map above `threshold` on
    finite cells, at most CANDIDATES_PER_POINT * `wanted` of them (highest first).

    A maximum is the largest value in its (2 * min_distance + 1)^2 window (the footprint), so
    distinct maxima are `min_distance` apart except on exact plateaus, which `_take` settles.
    This is skimage's `peak_local_max(image, min_distance=1, footprint=ones, threshold_abs,
    exclude_border=False, num_peaks)` (tests/test_sampling_peaks.py proves them equal) with the
    window maximum taken by OpenCV's dilation: half its time on these small maps.
    """
    valid = np.isfinite(n)
    image = np.where(valid, n, -1.0)
    size = 2 * min_distance + 1
    window_max = cv2.dilate(image, np.ones((size, size), np.uint8), borderType=cv2.BORDER_REPLICATE)
    peak = image == window_max
    if peak.all() and image.size > 1:  # a constant map has no peak
        return np.zeros((0, 2), np.int64)
    peak &= (image > threshold) & valid
    rc = np.argwhere(peak)
    order = np.argsort(-image[peak], kind="stable")[: CANDIDATES_PER_POINT * max(wanted, 1)]
    return rc[order]


def _by_score(rc: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-score, kind="stable")
    return rc[order], score[order]


def _kmeans_positives(n: np.ndarray, params: SampleParams) -> tuple[np.ndarray, np.ndarray]:
    """Cluster the cells above rel_threshold, weighted by how far they rise above it; each
    cluster's member nearest its centre, scored by the cluster's share of that weight."""
    high = np.isfinite(n) & (n > params.rel_threshold)
    rc = np.argwhere(high)
    if rc.shape[0] == 0:
        return rc, np.zeros(0)
    w = n[high] - params.rel_threshold
    k = min(params.n_pos, rc.shape[0])
    km = KMeans(n_clusters=k, n_init=1, random_state=params.seed).fit(rc.astype(np.float64), sample_weight=w)
    chosen, score = [], []
    for c in range(k):
        members = np.flatnonzero(km.labels_ == c)
        if members.size == 0:
            continue
        d = ((rc[members] - km.cluster_centers_[c]) ** 2).sum(1)
        chosen.append(rc[members[np.argmin(d)]])
        score.append(w[members].sum() / w.sum())
    return _by_score(np.array(chosen).reshape(-1, 2), np.array(score))


def _take(cands: np.ndarray, taken: list[np.ndarray], limit: int, min_distance: int) -> list[int]:
    """Indices of candidates (best first) kept at least `min_distance` cells from all taken."""
    keep: list[int] = []
    chosen = [(int(t[0]), int(t[1])) for t in taken]  # Python ints: a few cells, many comparisons
    for i, (r, c) in enumerate(cands.tolist()):
        if len(keep) >= limit:
            break
        if all(max(abs(r - tr), abs(c - tc)) >= min_distance for tr, tc in chosen):
            keep.append(i)
            chosen.append((r, c))
            taken.append(cands[i])
    return keep


def _in_box(grid: Grid, box_xywh) -> np.ndarray:
    """bool [rows, cols]: grid cells whose centre lies in the XYWH box."""
    x, y, w, h = (float(v) for v in box_xywh)
    cx, cy = grid.to_pixels(np.arange(grid.rows), np.arange(grid.cols))
    return ((cy >= y) & (cy < y + h))[:, None] & ((cx >= x) & (cx < x + w))[None, :]


def snap_positives(
    pts: InstancePoints, rects: np.ndarray, target: np.ndarray, others: np.ndarray, box_xywh, margin: float,
) -> InstancePoints:
    """Each positive moved to the centre of the hottest token of the finest view among the 3 x 3
    tokens around it (`rects` [n, 4] x0, y0, x1, y1; `target` [n] the instance's token values,
    `others` [k, n] its occluders' and rivals'), among those whose centre lies in the amodal box
    and where no other map is above the target's shrunk by `margin`. A token's attention speaks
    of its patch as a whole, and painting, smoothing and the coarser view move a peak towards
    a patch's border. A positive with no such token nearby stays; one that lands on a token
    another positive took is dropped."""
    if pts.fallback:
        return pts
    x, y, w, h = (float(v) for v in box_xywh)
    cx, cy = 0.5 * (rects[:, 0] + rects[:, 2]), 0.5 * (rects[:, 1] + rects[:, 3])
    allowed = np.flatnonzero((cx >= x) & (cx < x + w) & (cy >= y) & (cy < y + h))  # in the box
    ok = np.isfinite(target[allowed])
    for other in others:
        ok &= ~(other[allowed] * (1 + margin) > target[allowed])
    allowed = allowed[ok]  # in token order: the first of equally hot tokens wins, as over all
    cx, cy, target = cx[allowed], cy[allowed], target[allowed]
    side_x, side_y = rects[allowed, 2] - rects[allowed, 0], rects[allowed, 3] - rects[allowed, 1]
    keep, taken = [], set()
    px, py = pts.x.copy(), pts.y.copy()
    for i in range(len(pts)):
        if pts.label[i] == 1:
            near = np.flatnonzero((np.abs(cx - px[i]) < 1.5 * side_x) & (np.abs(cy - py[i]) < 1.5 * side_y))
            if near.size:
                j = int(near[np.argmax(target[near])])
                if j in taken:
                    continue
                taken.add(j)
                px[i], py[i] = cx[j], cy[j]
        keep.append(i)
    k = np.asarray(keep, np.int64)
    return InstancePoints(px[k], py[k], pts.label[k], pts.score[k], [pts.source[i] for i in keep])


def sample_points(
    target: np.ndarray,
    occluders: list[np.ndarray],
    grid: Grid,
    box_xywh,
    params: SampleParams,
    sigma_cells: float,
    occluder_peaks: list[float] | None = None,
    rivals: list[np.ndarray] | None = None,
) -> InstancePoints:
    """Points for one instance from its painted map `target` [rows, cols] on `grid` and the
    painted maps of its occluders; falls back to the box centre when the map is unusable.

    `occluder_peaks`: per occluder, the largest value of its map over the whole image; an
    occluder's map is normalised by it, so that the spill of its attention onto the target
    (the occluder's highest place inside this search region) does not count as its peak.
    `rivals`: painted maps of other instances of the target's category (sample.contrast), which
    veto positives as the occluders' maps do but give no negatives.
    """
    reason = map_fallback(target, params.flat_cv)
    if reason:
        return fallback_points(box_xywh, reason)
    rivals = rivals or []
    stacked = smooth(np.stack([target, *occluders, *rivals]), sigma_cells)
    maps, rival_maps = stacked[: 1 + len(occluders)], stacked[1 + len(occluders):]
    n = _normalise(maps[0])
    if n is None:
        return fallback_points(box_xywh, "flat")
    md = max(1, int(round(params.min_distance * max(grid.rows, grid.cols))))
    half = max(1, md // 2)
    window = _WindowMean(n)
    in_box = _in_box(grid, box_xywh)
    peaks = occluder_peaks if occluder_peaks is not None else [None] * (len(maps) - 1)
    occ_norm = [(occ, on) for occ, on in ((occ, _normalise(occ, hi)) for occ, hi in zip(maps[1:], peaks))
                if on is not None]
    # positives never where an occluder's (or a rival's) map is above the target's shrunk by the
    # margin (all on the scale of `token_values`: 1 = uniform attention)
    outranked = np.zeros(n.shape, bool)
    for other in [*maps[1:], *rival_maps]:
        outranked |= other * (1 + params.pos_margin) > maps[0]
    n_box = np.where(in_box & ~outranked, n, np.nan)

    if params.strategy == "kmeans":
        pos_rc, pos_score = _kmeans_positives(n_box, params)
        pos_source = "kmeans"
    else:
        pos_rc = _peaks(n_box, md, params.rel_threshold, params.n_pos)
        pos_rc, pos_score = _by_score(pos_rc, window(pos_rc, half))
        keep = _take(pos_rc, [], params.n_pos, md)
        pos_rc, pos_score = pos_rc[keep], pos_score[keep]
        pos_source = "peak"
    pos_rc, pos_score = pos_rc[: params.n_pos], pos_score[: params.n_pos]
    if pos_rc.shape[0] == 0:
        unvetoed = np.where(in_box, n, np.nan)
        vetoed = outranked.any() and np.nanmax(unvetoed, initial=-np.inf) >= params.rel_threshold
        return fallback_points(box_xywh, "vetoed" if vetoed else "nopeak")

    taken = [rc for rc in pos_rc]
    neg_rc, neg_score, neg_source = [], [], []
    for source in params.neg_sources:
        room = params.n_neg - len(neg_rc)
        if room <= 0:
            break
        if source == "occluder":
            cands, scores = [], []
            for occ, on in occ_norm:
                rc = _peaks(on, md, params.rel_threshold, room)
                r, c = rc[:, 0], rc[:, 1]
                s = on[r, c] - np.nan_to_num(n[r, c], nan=0.0)
                # the occluder is above the target on the common scale by the margin, and higher
                # on its own scale than the target on its scale (not the target's own peak)
                ok = (occ[r, c] > (1 + params.occ_margin) * np.nan_to_num(maps[0][r, c], nan=0.0)) & (s > 0)
                cands.append(rc[ok])
                scores.append(s[ok])
            if not cands:
                continue
            rc, s = _by_score(np.concatenate(cands), np.concatenate(scores))
        else:  # background: local minima of the instance's map below bg_max_level
            low = 1.0 - n if params.bg_region == "search_region" else np.where(in_box, np.nan, 1.0 - n)
            rc = _peaks(low, md, 1.0 - params.bg_max_level, room)
            rc, s = _by_score(rc, 1.0 - window(rc, half))
        for i in _take(rc, taken, room, md):
            neg_rc.append(rc[i])
            neg_score.append(s[i])
            neg_source.append(source)

    all_rc = np.concatenate([pos_rc, np.array(neg_rc, np.int64).reshape(-1, 2)])
    x, y = grid.to_pixels(all_rc[:, 0], all_rc[:, 1])
    label = np.zeros(len(all_rc), np.int8)
    label[: len(pos_rc)] = 1
    score = np.concatenate([pos_score, np.asarray(neg_score, np.float64)]).astype(np.float32)
    return InstancePoints(x, y, label, score, [pos_source] * len(pos_rc) + neg_source)
