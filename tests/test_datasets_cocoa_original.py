"""The original COCOA flavour on five real records (deocclusion's demo copies of
COCO_amodal_val2014.json records, with their COCO images): the facts their README proves hold
through our loader, and malformed records are left out with their reasons."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import masks
from pipeline.datasets import DatasetError, detect_flavour, load_dataset
from pipeline.datasets.cocoa_original import REGION_ID_STRIDE

REAL = Path(__file__).resolve().parents[2] / "shared/reference/amodal_real_data/COCOA/deocclusion_demo"
pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason="needs ../shared/reference/amodal_real_data")


def real_records() -> list[dict]:
    return [json.loads((REAL / f"{n}.json").read_text()) for n in range(1, 6)]


def write_file(tmp_path: Path, records: list[dict]) -> Path:
    """The records under an `images` table of the real file's shape (COCO image entries; the
    demo images are named N.jpg here)."""
    images = []
    for n, rec in enumerate(records, start=1):
        w, h = Image.open(REAL / f"{n}.jpg").size
        images.append({"id": rec["image_id"], "file_name": f"{n}.jpg", "width": w, "height": h,
                       "coco_url": rec["url"]})
    path = tmp_path / "COCO_amodal_val2014.json"
    path.write_text(json.dumps({"images": images, "annotations": records}))
    return path


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    records = real_records()
    path = write_file(tmp_path_factory.mktemp("cocoa"), records)
    return records, load_dataset(path, image_dir=REAL, check_images=True)


def test_flavour_is_detected_and_every_thing_region_loads(loaded, tmp_path):
    records, ds = loaded
    assert ds.flavour == "cocoa_original" and not ds.skips
    assert detect_flavour({"annotations": records}) == "cocoa_original"
    things = [[r for r in rec["regions"] if r["isStuff"] == 0] for rec in records]
    assert [len(im.instances) for im in ds.images] == [len(t) for t in things]
    assert [im.id for im in ds.images] == [rec["image_id"] for rec in records]
    # the 480x640 portrait image: masks are [h, w] = [640, 480]
    portrait = next(im for im in ds.images if im.width == 480)
    assert portrait.height == 640 and all(i.amodal_rle["size"] == [640, 480] for i in portrait.instances)


def test_readme_facts_hold_through_the_loader(loaded):
    records, ds = loaded
    n_occluded = 0
    for rec, im in zip(records, ds.images):
        by_id = {inst.id: inst for inst in im.instances}
        for j, region in enumerate(rec["regions"]):
            if region["isStuff"]:
                assert rec["id"] * REGION_ID_STRIDE + j not in by_id
                continue
            inst = by_id[rec["id"] * REGION_ID_STRIDE + j]
            assert inst.category_name == region["name"].strip()  # stripped, typos kept
            amodal, visible = masks.decode(inst.amodal_rle), masks.decode(inst.visible_rle)
            assert int(amodal.sum()) == region["area"]  # area = pixel count of the rasterised polygon
            x, y, w, h = inst.bbox
            ys, xs = np.nonzero(amodal)
            assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            if region["occlude_rate"] == 0:
                assert isinstance(region["occlude_rate"], int) and "visible_mask" not in region
                assert inst.visible_rle == inst.amodal_rle and inst.occlusion_rate == 0.0
                assert not inst.occluder_ids
                continue
            n_occluded += 1
            invisible = masks.decode(region["invisible_mask"])
            assert int(visible.sum() + invisible.sum()) == region["area"]  # area = |visible| + |invisible|
            assert np.array_equal(visible | invisible, amodal) and not (visible & invisible).any()
            # occlude_rate = |invisible| / area (the file's floats are that ratio to within 1e-9, not bit for bit)
            assert inst.occlusion_rate == pytest.approx(invisible.sum() / region["area"], abs=1e-15)
            assert inst.occlusion_rate == pytest.approx(region["occlude_rate"], abs=1e-9)
            # occluders come from the depth order: in front (smaller order), covering the hidden part
            orders = {rec["id"] * REGION_ID_STRIDE + k: r["order"] for k, r in enumerate(rec["regions"])}
            assert all(orders[o] < region["order"] for o in inst.occluder_ids)
            hidden = amodal & ~visible
            covered = np.zeros_like(hidden)
            for o in inst.occluder_ids:
                covered |= masks.decode(by_id[o].amodal_rle)
            front = [o for o in by_id if orders[o] < region["order"]]
            all_front = np.zeros_like(hidden)
            for o in front:
                all_front |= masks.decode(by_id[o].amodal_rle)
            assert np.array_equal(covered & hidden, all_front & hidden)
    assert n_occluded == 24  # the README's count of occluded regions
    names = sorted(set(ds.categories.values()))
    assert "dougnut" in names and "silverwear" in names and "stuff" not in names
    assert list(ds.categories) == list(range(1, len(names) + 1))


def test_stuff_regions_are_kept_on_request(tmp_path):
    records = real_records()
    ds = load_dataset(write_file(tmp_path, records), image_dir=REAL, include_stuff=True)
    assert ds.instance_count() == sum(len(rec["regions"]) for rec in records)
    assert "stuff" in ds.categories.values()


def test_malformed_records_and_regions_are_skipped_with_reasons(tmp_path):
    records = copy.deepcopy(real_records())
    records[1]["regions"][0]["segmentation"] = [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]  # a list of polygons
    records[2]["regions"][6]["visible_mask"]["size"] = [1, 1]
    records.append(copy.deepcopy(records[0]))  # a second record for one image
    records[-1]["id"] = 9999
    path = write_file(tmp_path, records[:5])
    data = json.loads(path.read_text())
    data["annotations"] = records
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=rf"annotation id {records[1]['id']} region 0: 'segmentation' must be one flat"):
        load_dataset(path, image_dir=REAL)
    ds = load_dataset(path, image_dir=REAL, on_error="skip")
    messages = [s.message for s in ds.skips]
    assert len(messages) == 3, messages
    assert "region 0: 'segmentation' must be one flat polygon" in messages[0]
    assert "'visible_mask': RLE size [1, 1] does not match" in messages[1]
    assert "annotation id 9999: a second record for image" in messages[2]
    assert ds.skips[2].instances == len(records[0]["regions"])


def test_modal_given_evaluation_names_pix2gestalt(loaded, tmp_path):
    from pipeline.evaluation import evaluate
    from pipeline.evaluation.run_info import undescribed_run

    _, ds = loaded
    amodal, visible = [], []
    for im in ds.images:
        for inst in im.instances:
            common = {"image_id": im.id, "category_id": inst.category_id, "gt_id": inst.id}
            amodal.append({**common, "segmentation": inst.amodal_rle, "score": 1.0, "modal_given": True})
            visible.append({**common, "segmentation": inst.visible_rle, "score": 1.0})
    (tmp_path / "a.json").write_text(json.dumps(amodal))
    (tmp_path / "v.json").write_text(json.dumps(visible))
    metrics = evaluate(ds, tmp_path / "a.json", tmp_path / "v.json", tmp_path / "reports",
                       run=undescribed_run("test"))
    assert metrics["protocol"]["modal_given"] and "pix2gestalt" in metrics["protocol"]["comparability"]
    assert metrics["miou"]["amodal_full"] == pytest.approx(1.0)
    assert "pix2gestalt" in (tmp_path / "reports" / "report.md").read_text()
