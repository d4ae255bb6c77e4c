"""Positives are vetoed where another object's map outranks the target's: occluders always,
look-alikes of the same category with sample.contrast = same_category, by the relative margin
sample.pos_margin; an instance whose every candidate is vetoed falls back to its box centre,
recorded and counted."""

from pathlib import Path

import numpy as np
import pytest

from pipeline.attention.cache import ImageAttention, InstanceAttention
from pipeline.sampling import synthetic
from pipeline.sampling.params import SampleParams
from pipeline.sampling.pixel_map import Grid, search_region
from pipeline.sampling.points import InstancePoints, sample_points, snap_positives
from pipeline.sampling.run import LayerChoice, sample_image

W = H = 200
BOX = (50.0, 50.0, 100.0, 100.0)


def _grid(params):
    return Grid.over(*search_region(BOX, W, H, params.box_enlarge), params.max_cells)


def _cell(grid, x, y):
    r = int((y - grid.y0) / grid.step_y)
    c = int((x - grid.x0) / grid.step_x)
    return r, c


def _maps(grid):
    """The target's map: its own peak at (70, 70) and a higher spill peak at (130, 130), where
    a look-alike's own map is higher still."""
    target = np.full((grid.rows, grid.cols), 0.1)
    rival = np.full_like(target, 0.1)
    target[_cell(grid, 70, 70)] = 1.0
    target[_cell(grid, 130, 130)] = 1.2
    rival[_cell(grid, 130, 130)] = 2.0
    return target, rival


def test_a_rival_map_vetoes_positives_on_the_look_alike():
    params = SampleParams(n_pos=2, n_neg=0, smooth=0.0)
    grid = _grid(params)
    target, rival = _maps(grid)
    free = sample_points(target, [], grid, BOX, params, 0.0)
    assert any(abs(x - 130) < 3 and abs(y - 130) < 3 for x, y in zip(free.x, free.y))
    vetoed = sample_points(target, [], grid, BOX, params, 0.0, rivals=[rival])
    assert len(vetoed) >= 1 and not vetoed.fallback
    assert all(abs(x - 70) < 3 and abs(y - 70) < 3 for x, y in zip(vetoed.x, vetoed.y))
    assert vetoed.label.tolist() == [1] * len(vetoed)  # rivals give no negatives


def test_pos_margin_vetoes_a_place_where_the_target_is_barely_above_an_occluder():
    base = SampleParams(n_pos=2, n_neg=0, smooth=0.0, pos_margin=0.0)
    grid = _grid(base)
    target, _ = _maps(grid)
    occluder = np.full_like(target, 0.1)
    occluder[_cell(grid, 130, 130)] = 1.1  # below the target's 1.2, but within 20 %
    plain = sample_points(target, [occluder], grid, BOX, base, 0.0)
    assert any(abs(x - 130) < 3 for x in plain.x)
    with_margin = SampleParams(n_pos=2, n_neg=0, smooth=0.0, pos_margin=0.2)
    margin = sample_points(target, [occluder], grid, BOX, with_margin, 0.0)
    assert len(margin) >= 1 and all(abs(x - 70) < 3 for x in margin.x)


def test_every_candidate_vetoed_falls_back_to_the_box_centre():
    params = SampleParams(n_pos=2, n_neg=0, smooth=0.0)
    grid = _grid(params)
    target, _ = _maps(grid)
    above = target * 2.0  # a look-alike above the target everywhere
    pts = sample_points(target, [], grid, BOX, params, 0.0, rivals=[above])
    assert pts.fallback == "vetoed" and pts.source == ["fallback"]
    assert (pts.x[0], pts.y[0]) == (100.0, 100.0)


def _two_objects_scene():
    """An L-shaped target (id 2) and a look-alike (id 1) in its notch: the look-alike lies in
    the target's box but neither occludes the other."""
    look_alike, target = np.zeros((H, W), bool), np.zeros((H, W), bool)
    look_alike[100:180, 100:180] = True
    target[40:140, 40:140] = True
    target[100:140, 100:140] = False
    return synthetic._layered({1: look_alike, 2: target}, W, H)


@pytest.mark.parametrize("contrast", ["occluders", "same_category"])
def test_sample_image_paints_same_category_rivals_only_when_asked(contrast):
    scene = _two_objects_scene()
    assert scene.occluders == {1: [], 2: []}
    placement = synthetic.grid_placement(W, H, base=10, fine=(20, 20))
    centres = synthetic._centres(placement)

    def on(mask):
        x, y = centres[:, 0].astype(int), centres[:, 1].astype(int)
        return mask[np.clip(y, 0, H - 1), np.clip(x, 0, W - 1)]

    own2, own1 = on(scene.visible[2]) & (centres[:, 0] < 70), on(scene.visible[1]) & (centres[:, 0] > 150)
    spill_in_box = on(scene.visible[1]) & (centres[:, 0] < 140) & (centres[:, 1] < 140)
    m2 = 0.01 + 1.0 * own2 + 1.5 * spill_in_box  # the target's map is highest on the look-alike
    m1 = 0.01 + 1.0 * own1 + 3.0 * spill_in_box
    maps = {g: np.stack([m / m.sum()] * 2).astype(np.float32) for g, m in ((1, m1), (2, m2))}
    instances = {g: InstanceAttention(g, "cup", "the cup", ["cup"], maps[g], occluder_names=["cup"] * len(scene.occluders[g]),
                                      occluder_ids=scene.occluders[g]) for g in (1, 2)}
    image = ImageAttention(1, W, H, placement, instances)
    record = synthetic.scene_record(scene, 1, Path("unused"))
    params = SampleParams(n_pos=1, n_neg=0, contrast=contrast)
    pts = sample_image(image, record, params, LayerChoice([0, 1], np.ones(2)))[2]
    x, y = int(pts.x[0]), int(pts.y[0])
    assert pts.label[0] == 1
    if contrast == "occluders":
        assert scene.visible[1][y, x]  # on the look-alike
    else:
        assert scene.visible[2][y, x]  # on the target's own evidence


def test_contrast_and_pos_margin_are_checked():
    with pytest.raises(ValueError, match="sample.contrast"):
        SampleParams(contrast="everyone")
    with pytest.raises(ValueError, match="sample.pos_margin"):
        SampleParams(pos_margin=-0.1)


def test_snap_moves_a_positive_to_the_hottest_allowed_token_centre_nearby():
    # 10-px tokens over 200 x 200; the target is hottest on the token [70, 80) x [70, 80)
    r, c = np.divmod(np.arange(400), 20)
    rects = np.stack([c * 10, r * 10, c * 10 + 10, r * 10 + 10], 1).astype(np.float64)
    target = np.full(400, 0.1)
    hot = 7 * 20 + 7
    target[hot] = 1.0
    target[7 * 20 + 8] = 0.9
    pts = InstancePoints(np.array([81.0, 20.0]), np.array([79.0, 20.0]), np.array([1, 0], np.int8),
                         np.array([1.0, 0.5], np.float32), ["peak", "background"])
    snapped = snap_positives(pts, rects, target, np.zeros((0, 400)), BOX, 0.2)
    assert (snapped.x.tolist(), snapped.y.tolist()) == ([75.0, 20.0], [75.0, 20.0])  # negatives stay
    # an occluder above the hottest token sends the positive to the next one
    occluder = np.zeros((1, 400))
    occluder[0, hot] = 0.9
    snapped = snap_positives(pts, rects, target, occluder, BOX, 0.2)
    assert (snapped.x[0], snapped.y[0]) == (85.0, 75.0)
    # two positives on the same token: the second is dropped
    twice = InstancePoints(np.array([76.0, 79.0]), np.array([76.0, 74.0]), np.array([1, 1], np.int8),
                           np.array([1.0, 0.9], np.float32), ["peak", "peak"])
    assert len(snap_positives(twice, rects, target, np.zeros((0, 400)), BOX, 0.0)) == 1
