"""Training-free amodal completion: hand-made geometry per variant, and quality on drawn scenes."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.decoding.completion import TRAINING_FREE, box_mask, complete, convex_hull
from pipeline.decoding.occluders import OccluderChoice, VlmOcclusion, choose_occluders, union


def rect(shape, x0, y0, x1, y1):
    m = np.zeros(shape, dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def iou(a, b):
    u = (a | b).sum()
    return 1.0 if u == 0 else float((a & b).sum() / u)


# ------------------------------------------------------------------ geometry

def test_box_mask_covers_fractional_box_and_clips():
    m = box_mask((2.5, 1.2, 3.0, 2.0), 10, 8)  # x 2.5..5.5 -> cols 2..5, y 1.2..3.2 -> rows 1..3
    assert m.sum() == 4 * 3
    assert m[1:4, 2:6].all()
    clipped = box_mask((-3, -3, 100, 5), 10, 8)
    assert clipped[:2].all() and not clipped[2:].any()
    assert not box_mask((3, 3, 0, 0), 10, 8).any()


def test_convex_hull_fills_a_c_shape_and_keeps_convex_masks():
    shape = (40, 40)
    square = rect(shape, 10, 10, 30, 30)
    c_shape = square & ~rect(shape, 15, 15, 30, 25)
    assert np.array_equal(convex_hull(c_shape), square)
    assert np.array_equal(convex_hull(square), square)
    assert not convex_hull(np.zeros(shape, bool)).any()


def test_variants_on_an_occluded_square():
    """Target 20..60 square; occluder square 40..80 hides its bottom-right corner."""
    shape = (100, 100)
    amodal = rect(shape, 20, 20, 60, 60)
    occluder = rect(shape, 40, 40, 80, 80)
    visible = amodal & ~occluder  # an L
    box = (20, 20, 40, 40)

    assert np.array_equal(complete("visible", visible, occluder, box), visible)

    hull = complete("hull", visible, occluder, box)
    # the hull of the L adds the triangle below its diagonal cut, nothing outside the square
    assert not (hull & ~amodal).any()
    added = hull & ~visible
    assert 0.45 * 400 < added.sum() < 0.6 * 400 + 40  # about half the hidden 20x20 corner
    assert added[41, 41] and not added[58, 58]

    ob = complete("occluder_box", visible, occluder, box)
    assert np.array_equal(ob, amodal)  # occluder ∩ box is exactly the hidden corner

    oh = complete("occluder_hull", visible, occluder, box)
    assert np.array_equal(oh, visible | (hull & occluder))
    assert not (oh & ~amodal).any()


def test_occluder_variants_ignore_occluders_outside_the_box_and_need_occluders():
    shape = (60, 60)
    visible = rect(shape, 10, 10, 20, 30)
    far = rect(shape, 40, 40, 60, 60)
    box = (10, 10, 15, 20)
    for method in ("occluder_hull", "occluder_box"):
        assert np.array_equal(complete(method, visible, far, box), visible)
        assert np.array_equal(complete(method, visible, np.zeros(shape, bool), box), visible)
    # occluder_box completes inside the box even beyond the visible part's hull
    near = rect(shape, 20, 10, 40, 40)
    ob = complete("occluder_box", visible, near, box)
    assert np.array_equal(ob, visible | rect(shape, 20, 10, 25, 30))
    assert np.array_equal(complete("occluder_hull", visible, near, box), visible)  # hull = V here


def test_empty_visible_and_unknown_method():
    shape = (20, 20)
    empty = np.zeros(shape, bool)
    occ = rect(shape, 0, 0, 10, 10)
    for method in ("visible", "hull", "occluder_hull"):
        assert not complete(method, empty, occ, (0, 0, 20, 20)).any()
    assert np.array_equal(complete("occluder_box", empty, occ, (0, 0, 5, 5)), rect(shape, 0, 0, 5, 5))
    with pytest.raises(ValueError, match="unknown training-free completion"):
        complete("magic", empty, occ, (0, 0, 1, 1))


# ------------------------------------------------------------------ occluder choice

def test_occluder_choice_rules():
    shape = (50, 50)
    masks = {1: rect(shape, 0, 0, 20, 20), 2: rect(shape, 15, 15, 30, 30), 3: rect(shape, 40, 40, 50, 50)}
    box = (0, 0, 25, 25)
    ok = VlmOcclusion(names=("bottle",), ids=(2,), parse_error="")
    assert choose_occluders("vlm", 1, box, masks, ok) == OccluderChoice((2,), "vlm")
    none = VlmOcclusion(names=(), ids=(), parse_error="")
    assert choose_occluders("vlm", 1, box, masks, none) == OccluderChoice((), "vlm_none")
    unmatched = VlmOcclusion(names=("cat",), ids=(), parse_error="")
    assert choose_occluders("vlm", 1, box, masks, unmatched) == OccluderChoice((2,), "overlap_unmatched")
    failed = VlmOcclusion(names=(), ids=(), parse_error="not JSON")
    assert choose_occluders("vlm", 1, box, masks, failed) == OccluderChoice((2,), "overlap_parse_failed")
    assert choose_occluders("overlap", 1, box, masks) == OccluderChoice((2,), "overlap")
    assert choose_occluders("gt", 1, box, masks, gt_ids=(3,)) == OccluderChoice((3,), "gt")
    with pytest.raises(ValueError, match="dataset gives no occluder_ids"):
        choose_occluders("gt", 1, box, masks, gt_ids=None)
    with pytest.raises(ValueError, match=r"\[9\] are not instances"):
        choose_occluders("vlm", 1, box, masks, VlmOcclusion(("x",), (9,), ""))
    assert union((2, 3), masks, shape).sum() == 15 * 15 + 10 * 10


# ------------------------------------------------------------------ quality on drawn scenes

def _blob(rng, shape):
    """A random convex-ish object (rotated ellipse or rounded box) — amodal masks of products."""
    import cv2

    h, w = shape
    m = np.zeros(shape, np.uint8)
    cx, cy = rng.uniform(0.2 * w, 0.8 * w), rng.uniform(0.2 * h, 0.8 * h)
    a, b = rng.uniform(0.08 * w, 0.22 * w), rng.uniform(0.08 * h, 0.25 * h)
    angle = rng.uniform(0, 180)
    if rng.random() < 0.5:
        cv2.ellipse(m, (int(cx), int(cy)), (int(a), int(b)), angle, 0, 360, 1, -1)
    else:
        pts = cv2.boxPoints(((cx, cy), (2 * a, 2 * b), angle)).astype(np.int32)
        cv2.fillConvexPoly(m, pts, 1)
    return m.astype(bool)


def drawn_scenes(n_scenes=40, seed=0, shape=(120, 160)):
    """Scenes of 3-6 layered objects: per instance amodal, visible, box, GT occluder ids."""
    rng = np.random.default_rng(seed)
    scenes = []
    for _ in range(n_scenes):
        amodal = [_blob(rng, shape) for _ in range(int(rng.integers(3, 7)))]  # back to front
        instances = {}
        for k, a in enumerate(amodal):
            front = union(range(k + 1, len(amodal)), dict(enumerate(amodal)), shape)
            visible = a & ~front
            if visible.sum() < 0.15 * a.sum():
                continue
            ys, xs = np.nonzero(a)
            box = (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
            occ = tuple(j for j in range(k + 1, len(amodal)) if (amodal[j] & a).any())
            instances[k] = dict(amodal=a, visible=visible, box=box, occluders=occ)
        scenes.append(instances)
    return scenes


def test_completion_quality_on_drawn_scenes_modal_given():
    """Modal-given (GT visible masks + GT occluders): occluder-aware variants beat the baseline."""
    scenes = drawn_scenes()
    ious = {m: [] for m in TRAINING_FREE}
    occluded = []
    for inst in scenes:
        visible_masks = {k: v["visible"] for k, v in inst.items()}
        for k, v in inst.items():
            kept = tuple(j for j in v["occluders"] if j in visible_masks)
            occ = union(kept, visible_masks, v["visible"].shape)
            occluded.append(bool((v["amodal"] & ~v["visible"]).any()))
            for m in TRAINING_FREE:
                ious[m].append(iou(complete(m, v["visible"], occ, v["box"]), v["amodal"]))
    occluded = np.array(occluded)
    assert occluded.sum() >= 40 and (~occluded).sum() >= 20
    full = {m: float(np.mean(ious[m])) for m in TRAINING_FREE}
    occ = {m: float(np.mean(np.array(ious[m])[occluded])) for m in TRAINING_FREE}
    print(f"\n{len(occluded)} instances, {occluded.sum()} occluded")
    for m in TRAINING_FREE:
        print(f"  {m:14s} mIoU_full {full[m]:.4f}  mIoU_occluded {occ[m]:.4f}")
    for m in ("occluder_hull", "occluder_box"):
        assert full[m] > full["visible"] + 0.01
        assert occ[m] > occ["visible"] + 0.02
    # unoccluded instances: every variant but `hull` leaves a convex visible mask unchanged
    assert np.allclose(np.array(ious["occluder_box"])[~occluded], 1.0)


def test_completion_quality_on_synth_scenes_modal_given(tmp_path):
    """The same on `pipeline.synth` scenes (non-convex silhouettes, D2SA format, GT occluder_ids)."""
    from pipeline import masks as rle
    from pipeline.datasets import load_dataset
    from pipeline.synth import generate

    ds = load_dataset(generate(tmp_path, 40, seed=3, width=320, height=240, image_format="png", progress=False))
    ious = {m: [] for m in TRAINING_FREE}
    occluded = []
    for im in ds.images:
        visible = {i.id: rle.decode(i.visible_rle) for i in im.instances}
        for inst in im.instances:
            amodal = rle.decode(inst.amodal_rle)
            occ = union(inst.occluder_ids, visible, amodal.shape)
            occluded.append(inst.occlusion_rate > 0)
            for m in TRAINING_FREE:
                ious[m].append(iou(complete(m, visible[inst.id], occ, inst.bbox), amodal))
    occluded = np.array(occluded)
    assert occluded.sum() >= 40
    full = {m: float(np.mean(ious[m])) for m in TRAINING_FREE}
    occ = {m: float(np.mean(np.array(ious[m])[occluded])) for m in TRAINING_FREE}
    print(f"\nsynth: {len(occluded)} instances, {occluded.sum()} occluded")
    for m in TRAINING_FREE:
        print(f"  {m:14s} mIoU_full {full[m]:.4f}  mIoU_occluded {occ[m]:.4f}")
    for m in ("occluder_hull", "occluder_box"):
        assert full[m] > full["visible"] + 0.01
        assert occ[m] > occ["visible"] + 0.03
