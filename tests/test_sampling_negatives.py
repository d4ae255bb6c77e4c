"""Negatives never land on the target: background ones outside the amodal box, occluder ones
only where the occluder (on its own scale) outranks the target; positives stay in the box."""

import numpy as np

from pipeline.sampling.params import SampleParams
from pipeline.sampling.pixel_map import Grid, search_region
from pipeline.sampling.points import sample_points

W = H = 200
BOX = (50.0, 50.0, 100.0, 100.0)  # the object fills its box


def _sparse_object_map(grid: Grid, rng, n_hot=4):
    """A sparse attention map: low noise everywhere, a few hot cells inside the box."""
    m = rng.uniform(0.0, 0.05, (grid.rows, grid.cols))
    ys, xs = grid.to_pixels(np.arange(grid.rows), np.arange(grid.cols))[::-1]
    inside_r = np.flatnonzero((ys >= 60) & (ys < 140))
    inside_c = np.flatnonzero((xs >= 60) & (xs < 140))
    for _ in range(n_hot):
        m[rng.choice(inside_r), rng.choice(inside_c)] = rng.uniform(0.7, 1.0)
    return m


def _on_object(pts):
    x, y, w, h = BOX
    return (pts.x >= x) & (pts.x < x + w) & (pts.y >= y) & (pts.y < y + h)


def test_background_negatives_of_a_sparse_map_never_land_on_an_object_filling_its_box():
    rng = np.random.default_rng(0)
    old = SampleParams(box_enlarge=1.0, bg_region="search_region", occ_margin=0.0)
    new = SampleParams()
    on_object = {"old": 0, "new": 0}
    negatives = {"old": 0, "new": 0}
    for trial in range(20):
        for name, params in (("old", old), ("new", new)):
            grid = Grid.over(*search_region(BOX, W, H, params.box_enlarge), params.max_cells)
            pts = sample_points(_sparse_object_map(grid, np.random.default_rng(trial)), [], grid, BOX, params, 0.5)
            assert not pts.fallback
            neg = pts.label == 0
            on_object[name] += int(_on_object(pts)[neg].sum())
            negatives[name] += int(neg.sum())
            # positives inside the box; every point says where it comes from
            assert _on_object(pts)[pts.label == 1].all()
            assert len(pts.source) == len(pts) and set(pts.source) <= {"peak", "background"}
            assert all(s == "background" for s, lab in zip(pts.source, pts.label) if lab == 0)
    assert negatives["new"] >= 30 and negatives["old"] >= 30
    assert on_object["old"] / negatives["old"] > 0.9  # inside the box, low attention is still the object
    assert on_object["new"] == 0


def test_occluder_negatives_ignore_the_occluders_spill_onto_the_target():
    """The occluder's own peak lies outside this search region; inside it, only its weak spill
    onto the target: that spill must not become a negative."""
    params = SampleParams(neg_sources=("occluder",), n_neg=2)
    grid = Grid.over(*search_region(BOX, W, H, params.box_enlarge), params.max_cells)
    rng = np.random.default_rng(1)
    target = _sparse_object_map(grid, rng)
    spill = rng.uniform(0.0, 0.05, target.shape)
    spill[grid.rows // 2, grid.cols // 2] = 0.4  # spill onto the target, where its own map is low
    target[grid.rows // 2, grid.cols // 2] = 0.02
    global_peak = 1.0  # the occluder's own evidence, elsewhere in the image
    with_scale = sample_points(target, [spill], grid, BOX, params, 0.5, occluder_peaks=[global_peak])
    assert (with_scale.label == 0).sum() == 0
    # normalised within the region alone, the spill would look like the occluder's peak
    region_only = sample_points(target, [spill], grid, BOX, params, 0.5)
    assert (region_only.label == 0).sum() >= 1
    # the occluder's real peak in the region gives a negative, labelled as such
    own = spill.copy()
    own[2, 2] = 1.0  # a margin cell, outside the target's box
    pts = sample_points(target, [own], grid, BOX, params, 0.5, occluder_peaks=[global_peak])
    neg = pts.label == 0
    assert neg.sum() >= 1 and not _on_object(pts)[neg].any()
    assert [s for s, lab in zip(pts.source, pts.label) if lab == 0] == ["occluder"] * int(neg.sum())
