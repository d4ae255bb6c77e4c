"""Token attention -> pixel maps: exact painting, overlap averaging, view mixing, normalisation."""

import dataclasses

import numpy as np
import pytest

from pipeline.attention.cache import TokenPlacement
from pipeline.sampling.pixel_map import Grid, paint, search_region, split_views, token_values


def _placement(view, rect):
    n = len(view)
    return TokenPlacement(np.asarray(view, np.int8), np.zeros(n, np.int32), np.zeros(n, np.int32),
                          np.asarray(rect, np.float32))


def _brute_force(values, placement, grid, view_weights):
    """Per cell: mean of each view's tokens whose rect holds the cell centre, weighted over views."""
    out = np.full((values.shape[0], grid.rows, grid.cols), np.nan)
    rect = np.asarray(placement.rect, np.float64)
    for r in range(grid.rows):
        for c in range(grid.cols):
            x, y = grid.to_pixels(np.array([r]), np.array([c]))
            inside = (rect[:, 0] <= x) & (x < rect[:, 2]) & (rect[:, 1] <= y) & (y < rect[:, 3])
            total, weight = 0.0, 0.0
            for v, w in zip((0, 1), view_weights):
                sel = inside & (placement.view == v)
                if sel.any() and w > 0:
                    total = total + w * values[:, sel].mean(axis=1)
                    weight += w
            if weight > 0:
                out[:, r, c] = total / weight
    return out


def test_regular_grid_paints_each_token_over_its_rect():
    r, c = np.divmod(np.arange(12), 4)
    rect = np.stack([c * 10, r * 10, c * 10 + 10, r * 10 + 10], 1)
    placement = _placement(np.zeros(12), rect)
    values = np.arange(12, dtype=np.float64)[None]
    grid = Grid.over(0, 0, 40, 30, max_cells=40)
    assert (grid.rows, grid.cols, grid.step_x, grid.step_y) == (30, 40, 1.0, 1.0)
    painted = paint(values, split_views(placement), grid, (1.0, 1.0))
    np.testing.assert_array_equal(painted[0], np.kron(values.reshape(3, 4), np.ones((10, 10))))


def test_overlapping_rects_average_and_uncovered_cells_are_nan():
    placement = _placement([0, 0], [[0, 0, 20, 10], [10, 0, 30, 10]])
    painted = paint(np.array([[1.0, 3.0]]), split_views(placement), Grid.over(0, 0, 40, 10, 40), (1, 1))[0]
    np.testing.assert_array_equal(painted[:, :10], 1.0)
    np.testing.assert_array_equal(painted[:, 10:20], 2.0)
    np.testing.assert_array_equal(painted[:, 20:30], 3.0)
    assert np.isnan(painted[:, 30:]).all()


def test_views_mix_with_weights_where_both_cover():
    placement = _placement([0, 1], [[0, 0, 40, 10], [0, 0, 20, 10]])
    painted = paint(np.array([[1.0, 3.0]]), split_views(placement), Grid.over(0, 0, 40, 10, 40), (0.25, 0.75))[0]
    np.testing.assert_allclose(painted[:, :20], 0.25 * 1 + 0.75 * 3)
    np.testing.assert_allclose(painted[:, 20:], 1.0)


def test_random_rects_match_brute_force_at_reduced_resolution():
    rng = np.random.default_rng(3)
    n = 60
    xy = rng.uniform(-20, 200, (n, 2))
    wh = rng.uniform(3, 60, (n, 2))
    placement = _placement(rng.integers(0, 2, n), np.concatenate([xy, xy + wh], 1))
    values = rng.random((3, n))
    grid = Grid.over(*search_region((30.5, 12.25, 131.0, 97.0), 180, 150, 1.3), max_cells=24)
    assert max(grid.rows, grid.cols) <= 24 and grid.step > 1
    got = paint(values, split_views(placement), grid, (0.4, 0.6))
    np.testing.assert_allclose(got, _brute_force(values, placement, grid, (0.4, 0.6)), rtol=1e-5, atol=1e-6)


def test_search_region_enlarges_about_the_centre_and_clips():
    assert search_region((10, 20, 40, 20), 100, 100, 1.0) == (10, 20, 50, 40)
    assert search_region((10, 20, 40, 20), 100, 100, 1.5) == (0, 15, 60, 45)
    assert search_region((80, 90, 40, 20), 100, 100, 2.0) == (60, 80, 100, 100)


@pytest.mark.parametrize("norm", ["mean", "max"])
def test_token_values_normalise_each_view_then_weight_layers(norm):
    rng = np.random.default_rng(0)
    placement = _placement([0] * 4 + [1] * 8, np.zeros((12, 4)))
    views = split_views(placement)
    maps = rng.random((2, 3, 12))  # K=2 instances, 3 layers
    maps[:, :, 4:] *= 50  # the fine view on another scale
    out = token_values(maps, [0, 2], np.array([1.0, 3.0]), views, norm)
    stat = np.mean if norm == "mean" else np.max
    for k in range(2):
        for t in views:
            per_layer = [maps[k, l, t.index] / stat(maps[k, l, t.index]) for l in (0, 2)]
            np.testing.assert_allclose(out[k, t.index], 0.25 * per_layer[0] + 0.75 * per_layer[1])
    # a view of zeros stays zero; NaN stays NaN
    maps[0, :, :4] = 0
    maps[1, 0, 5] = np.nan
    out = token_values(maps, [0, 2], np.array([1.0, 1.0]), views, norm)
    assert (out[0, :4] == 0).all() and np.isnan(out[1, 5]) and np.isfinite(out[0]).all()


def test_unknown_view_is_an_error():
    with pytest.raises(ValueError, match="views"):
        split_views(_placement([0, 2], np.zeros((2, 4))))


def _generic(views):
    """The same views with the lattice forgotten: painted by the difference array."""
    return [dataclasses.replace(t, lattice=None) for t in views]


def _lattice_placement(col_edges, row_edges, view=0, drop=()):
    """Tokens on the lattice of the given edges, in row-major order, without the `drop` places."""
    nr, nc = len(row_edges) - 1, len(col_edges) - 1
    r, c = np.divmod(np.arange(nr * nc), nc)
    keep = ~np.isin(np.arange(nr * nc), drop)
    r, c = r[keep], c[keep]
    rect = np.stack([np.take(col_edges, c), np.take(row_edges, r), np.take(col_edges, c + 1),
                     np.take(row_edges, r + 1)], 1)
    return TokenPlacement(np.full(r.size, view, np.int8), r.astype(np.int32), c.astype(np.int32),
                          rect.astype(np.float32))


def _concat(*placements):
    return TokenPlacement(*(np.concatenate([getattr(p, k) for p in placements]) for k in ("view", "row", "col", "rect")))


def test_lattice_views_are_gathered_and_equal_the_difference_array():
    rng = np.random.default_rng(5)
    cols = np.cumsum(np.r_[3.3, rng.uniform(4, 19, 11)])  # uneven spans, starting inside the image
    rows = np.cumsum(np.r_[0.0, rng.uniform(4, 19, 8)])
    coarse = _lattice_placement(np.linspace(0, 200, 7), np.linspace(0, 150, 6))
    fine = _lattice_placement(cols, rows, view=1, drop=[0, 5, 17, 40])  # places without a token
    placement = _concat(coarse, fine)
    views = split_views(placement)
    assert all(t.lattice is not None for t in views)
    values = rng.random((3, len(placement)))
    for box, cells in [((30.5, 12.25, 131.0, 97.0), 24), ((0, 0, 200, 150), 64), ((150, 100, 49, 49), 7),
                       ((5, 5, 1, 1), 64)]:
        grid = Grid.over(*search_region(box, 200, 150, 1.3), max_cells=cells)
        got = paint(values, views, grid, (0.4, 0.6))
        np.testing.assert_allclose(got, paint(values, _generic(views), grid, (0.4, 0.6)), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got, _brute_force(values, placement, grid, (0.4, 0.6)), rtol=1e-5, atol=1e-6)
        assert np.array_equal(np.isnan(got), np.isnan(_brute_force(values, placement, grid, (0.4, 0.6))))


def test_rects_that_are_no_lattice_use_the_difference_array():
    square = _lattice_placement(np.linspace(0, 40, 5), np.linspace(0, 30, 4))
    shifted = dataclasses.replace(square, rect=square.rect + np.where(np.arange(12) == 5, 1.0, 0.0)[:, None])
    overlapping = _concat(square, dataclasses.replace(square, col=square.col + 4, rect=square.rect + [5, 0, 5, 0]))
    twice = _concat(square, square)
    for placement in (shifted, overlapping, twice):
        assert split_views(placement)[0].lattice is None
    assert split_views(square)[0].lattice is not None


@pytest.mark.parametrize("family, image_hw", [
    ("llava", (480, 640)), ("llava_next", (479, 641)), ("llava_next", (1440, 1920)),
    ("llava_onevision", (480, 640)), ("llava_onevision", (1213, 407)), ("qwen2_vl", (250, 37)),
])
def test_real_placements_are_lattices_in_every_view(family, image_hw):
    """Transformers' feature packing gives lattice views, so sampling gathers on every family."""
    from pipeline.attention.placement import placement_for

    if family.startswith("qwen"):
        import test_placement_qwen as qwen
        from pipeline.vlm_families import get_family

        config, processor = qwen.identity_model(family)[1], qwen.processor_for(family, get_family(family).pixel_budget)
    else:
        import test_placement_packing as llava

        _, config, processor = llava.identity_model(family)
    placement = placement_for(config, processor, image_hw).placement
    views = split_views(placement)
    assert all(t.lattice is not None for t in views)
    values = np.random.default_rng(0).random((2, len(placement)))
    h, w = image_hw
    grid = Grid.over(*search_region((0.1 * w, 0.2 * h, 0.5 * w, 0.6 * h), w, h, 1.3), max_cells=64)
    np.testing.assert_allclose(paint(values, views, grid, (0.5, 0.5)), paint(values, _generic(views), grid, (0.5, 0.5)),
                               rtol=1e-6, atol=1e-7)
