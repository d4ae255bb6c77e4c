"""Synthetic D2SA-format scenes: determinism, mask consistency, occlusion spread, shapes, loading."""

import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from typer.testing import CliRunner

from pipeline import masks
from pipeline.cli import app
from pipeline.datasets import load_dataset
from pipeline.synth import ANNOTATION_NAME, SceneConfig, generate, synth_coco


@pytest.fixture(scope="module")
def scenes():
    return synth_coco(60, seed=7)


def _tree(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = generate(tmp_path / "a", 3, seed=11, width=160, height=120, progress=False)
    generate(tmp_path / "b", 3, seed=11, width=160, height=120, progress=False)
    generate(tmp_path / "c", 3, seed=12, width=160, height=120, progress=False)
    ta, tb, tc = _tree(tmp_path / "a"), _tree(tmp_path / "b"), _tree(tmp_path / "c")
    assert a == tmp_path / "a" / ANNOTATION_NAME
    assert len(ta) == 4 and ta == tb
    assert ta[a.relative_to(tmp_path / "a")] != tc[a.relative_to(tmp_path / "a")]


def test_schema(scenes):
    data, images = scenes
    assert len(data["images"]) == len(images) == 60
    assert 10 <= len(data["categories"]) <= 20
    for cat in data["categories"]:
        assert set(cat) == {"id", "name", "supercategory"} and cat["name"].islower() and "_" in cat["name"]
    for im, rgb in zip(data["images"], images):
        assert rgb.shape == (im["height"], im["width"], 3) and rgb.dtype == np.uint8
    ids = [a["id"] for a in data["annotations"]]
    assert ids == list(range(1, len(ids) + 1))
    for a in data["annotations"]:
        assert a["iscrowd"] == 0 and isinstance(a["segmentation"]["counts"], str)
        assert isinstance(a["visible_mask"]["counts"], str)
        rle = masks.to_compressed(a["segmentation"])
        assert a["area"] == mask_utils.area(rle)
        assert a["bbox"] == pytest.approx(mask_utils.toBbox(rle).tolist())


def test_visible_is_amodal_minus_occluders_in_front(scenes):
    data, _ = scenes
    by_image = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    for anns in by_image.values():  # annotations are in drawing order, back to front
        amodal = [masks.decode(a["segmentation"]) for a in anns]
        for j, a in enumerate(anns):
            visible = masks.decode(a["visible_mask"])
            assert not (visible & ~amodal[j]).any()
            in_front = [anns[i]["id"] for i in range(j + 1, len(anns)) if (amodal[i] & amodal[j]).any()]
            assert a["occluder_ids"] == in_front
            cover = np.zeros_like(visible)
            for i in range(j + 1, len(anns)):
                cover |= amodal[i]
            assert np.array_equal(visible, amodal[j] & ~cover)
            assert a["occlude_rate"] == pytest.approx(1 - visible.sum() / amodal[j].sum(), abs=1e-6)


def test_occlusion_spread_and_instance_count(scenes):
    data, _ = scenes
    rates = np.array([a["occlude_rate"] for a in data["annotations"]])
    assert 3.5 <= len(rates) / 60 <= 5.2  # D2SA-val scale: ~4.3 per image
    assert (rates == 0).mean() > 0.2
    assert (rates > 0.5).mean() > 0.08
    assert rates.max() <= SceneConfig().max_occlusion + 1e-9
    assert all(masks.area(a["visible_mask"]) >= SceneConfig().min_visible_px for a in data["annotations"])


def test_silhouettes_are_not_convex(scenes):
    data, _ = scenes
    solidity = []
    for a in data["annotations"]:
        m = masks.decode(a["segmentation"]).astype(np.uint8)
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        hull = cv2.convexHull(np.concatenate(contours))
        solidity.append(m.sum() / max(cv2.contourArea(hull), 1.0))
    solidity = np.array(solidity)
    assert (solidity < 0.9).mean() > 0.5
    assert solidity.max() <= 1.05


def test_pixels_show_the_objects(scenes):
    data, images = scenes
    rgb = images[0].astype(float)
    anns = [a for a in data["annotations"] if a["image_id"] == 1]
    union = np.zeros(rgb.shape[:2], bool)
    for a in anns:
        union |= masks.decode(a["segmentation"])
    # background is smooth: neighbouring background pixels differ by noise only
    bg = rgb[~union]
    assert bg.std(0).max() < 20
    for a in anns:
        vis = masks.decode(a["visible_mask"])
        # object colour differs from the background mean
        assert np.abs(rgb[vis].mean(0) - bg.mean(0)).max() > 10 or rgb[vis].std(0).max() > 20


def test_loads_as_d2sa_and_cli(tmp_path):
    result = CliRunner().invoke(app, ["synth", "--out", str(tmp_path), "--images", "4", "--seed", "3",
                                      "--width", "200", "--height", "150"])
    assert result.exit_code == 0, result.output
    path = tmp_path / ANNOTATION_NAME
    ds = load_dataset(path, "d2sa", check_images=True)
    assert load_dataset(path).name == ds.name  # detection agrees
    data = json.loads(path.read_text())
    assert ds.instance_count() == len(data["annotations"]) and len(ds.images) == 4
    by_id = {a["id"]: a for a in data["annotations"]}
    for im in ds.images:
        assert (im.width, im.height) == (200, 150) and im.path.exists()
        for inst in im.instances:
            a = by_id[inst.id]
            assert inst.occluder_ids == tuple(a["occluder_ids"])
            assert inst.occlusion_rate == pytest.approx(a["occlude_rate"], abs=1e-6)
            assert inst.amodal_rle == a["segmentation"]
