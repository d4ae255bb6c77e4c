"""`vlmsam export --to fiftyone` on a finished smoke run: the folder against FiftyOne's
FiftyOneDataset format (decoded here by hand, as FiftyOne documents and serialises it), and,
where FiftyOne and its database run, imported by FiftyOne itself."""

from __future__ import annotations

import base64
import io
import json
import os
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline import masks as rle
from pipeline.cli import app
from pipeline.demo import working_dir
from pipeline.evaluation.checked_predictions import read_checked
from pipeline.sampling.points_schema import read_points
from pipeline.visualize import RunOutputs

LABEL_FIELDS = ("ground_truth_amodal", "ground_truth_visible", "pred_amodal", "pred_visible")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, finished_smoke_run):
    """A finished smoke run on three synthetic images, exported by the command line."""
    root = tmp_path_factory.mktemp("run")
    dataset = finished_smoke_run(root, 3, seed=7, width=160, height=120)
    out = root / "export" / "fiftyone"
    fiftyone_loaded_before = "fiftyone" in sys.modules
    with working_dir(root):
        result = CliRunner().invoke(app, ["export", "--to", "fiftyone", str(out), "--params", "params.yaml"])
    assert result.exit_code == 0, result.output
    assert "SMOKE (random weights, not results): 3 images" in result.output
    if not fiftyone_loaded_before:
        assert "fiftyone" not in sys.modules  # the export is written without FiftyOne
    d = RunOutputs()
    outputs = RunOutputs(root / d.cache, root / d.points, root / d.visible, root / d.amodal)
    return out, dataset, outputs


def decode_array(value: dict) -> np.ndarray:
    """A FiftyOne array field from its JSON: BSON binary of a zlib-compressed .npy."""
    assert set(value) == {"$binary"} and value["$binary"]["subType"] == "00"
    return np.load(io.BytesIO(zlib.decompress(base64.b64decode(value["$binary"]["base64"]))))


def uncrop(detection: dict, width: int, height: int) -> np.ndarray:
    """The full-image mask of a Detection: its crop placed at its relative box."""
    full = np.zeros((height, width), bool)
    x, y, w, h = detection["bounding_box"]
    if detection["mask_empty"]:
        assert "mask" not in detection and [x, y, w, h] == [0, 0, 0, 0]
        return full
    crop = decode_array(detection["mask"])
    x0, y0, bw, bh = round(x * width), round(y * height), round(w * width), round(h * height)
    assert crop.shape == (bh, bw) and crop.dtype == bool  # the mask is exactly the box's crop
    assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()  # tight box
    full[y0:y0 + bh, x0:x0 + bw] = crop
    return full


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def test_export_layout_and_dataset_info(exported):
    out, dataset, _ = exported
    assert sorted(p.name for p in out.iterdir()) == ["data", "fields", "metadata.json", "samples.json"]
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["media_type"] == "image" and "version" not in meta  # FiftyOne infers the schema
    assert meta["name"].endswith("-SMOKE")
    info = meta["info"]
    assert info["smoke"] is True and info["tags"] == ["SMOKE"] and "SMOKE" in info["description"]
    assert info["default_classes"] == sorted(set(dataset.categories.values()))


def test_one_sample_per_image_with_every_instance(exported):
    out, dataset, outputs = exported
    samples = json.loads((out / "samples.json").read_text())["samples"]
    assert [s["image_id"] for s in samples] == [im.id for im in dataset.images]
    amodal, visible = read_checked(outputs.amodal, dataset), read_checked(outputs.visible, dataset)
    for sample, record in zip(samples, dataset.images):
        assert sample["tags"] == ["SMOKE"]
        assert (out / sample["filepath"]).read_bytes() == Path(record.path).read_bytes()
        assert sample["metadata"] == {"_cls": "ImageMetadata", "width": record.width, "height": record.height}
        ids = sorted(inst.id for inst in record.instances)
        for field in LABEL_FIELDS:
            assert sample[field]["_cls"] == "Detections"
            detections = sample[field]["detections"]
            assert all(d["_cls"] == "Detection" for d in detections)
            assert sorted(d["gt_id"] for d in detections) == ids  # smoke runs prompt every instance
        masks = {"ground_truth_amodal": {i.id: i.amodal_rle for i in record.instances},
                 "ground_truth_visible": {i.id: i.visible_rle for i in record.instances},
                 "pred_amodal": {g: amodal.by_gt_id[g]["segmentation"] for g in ids},
                 "pred_visible": {g: visible.by_gt_id[g]["segmentation"] for g in ids}}
        for field, by_id in masks.items():
            for d in sample[field]["detections"]:
                x, y, w, h = d["bounding_box"]
                assert 0 <= x <= 1 and 0 <= y <= 1 and x + w <= 1 + 1e-9 and y + h <= 1 + 1e-9
                assert iou(uncrop(d, record.width, record.height), rle.decode(by_id[d["gt_id"]])) == 1.0
        for d in sample["pred_amodal"]["detections"]:
            assert d["confidence"] == amodal.by_gt_id[d["gt_id"]]["score"]
            assert d["amodal_source"] == amodal.by_gt_id[d["gt_id"]]["amodal_source"]
            assert 0 <= d["iou"] <= 1


def test_points_are_relative_keypoints_labelled_positive_and_negative(exported):
    out, dataset, outputs = exported
    samples = json.loads((out / "samples.json").read_text())["samples"]
    table = read_points(outputs.points)[0].to_pylist()
    sizes = {im.id: (im.width, im.height) for im in dataset.images}
    exported_points = []
    for sample in samples:
        assert sample["points"]["_cls"] == "Keypoints"
        for kp in sample["points"]["keypoints"]:
            assert kp["_cls"] == "Keypoint" and kp["label"] in ("positive", "negative")
            for x, y in kp["points"]:
                assert 0 <= x <= 1 and 0 <= y <= 1
                exported_points.append((kp["gt_id"], kp["label"], x, y))
    expected = [(r["gt_id"], "positive" if r["label"] == 1 else "negative",
                 r["x"] / sizes[r["image_id"]][0], r["y"] / sizes[r["image_id"]][1]) for r in table]
    got, want = sorted(exported_points), sorted(expected)
    assert [p[:2] for p in got] == [p[:2] for p in want]
    assert np.allclose([p[2:] for p in got], [p[2:] for p in want], rtol=0, atol=1e-9)


def test_attention_heatmaps_exist(exported):
    from PIL import Image

    out, dataset, _ = exported
    samples = json.loads((out / "samples.json").read_text())["samples"]
    for sample, record in zip(samples, dataset.images):
        heatmap = sample["attention"]
        assert heatmap["_cls"] == "Heatmap" and heatmap["range"] == [0, 255]
        assert heatmap["map_path"].startswith("fields/attention/")
        with Image.open(out / heatmap["map_path"]) as im:
            assert im.mode == "L" and im.size == (record.width, record.height)
            values = np.asarray(im)
        assert values.max() == 255  # each instance map is normalised to [0, 1] first


def test_export_refuses_to_replace_a_foreign_folder(exported, tmp_path):
    out, _, outputs = exported
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    root = outputs.cache.parents[1]
    with working_dir(root):
        result = CliRunner().invoke(app, ["export", "--to", "fiftyone", str(foreign)])
        again = CliRunner().invoke(app, ["export", "--to", "fiftyone", str(out)])  # an earlier export: replaced
    assert result.exit_code == 1 and "is not a vlmsam FiftyOne export" in result.output
    assert (foreign / "keep.txt").read_text() == "mine"
    assert again.exit_code == 0, again.output


def test_fiftyone_imports_the_export(exported, tmp_path_factory):
    """FiftyOne itself loads the folder: fields, label types, masks, keypoints, heatmaps."""
    os.environ.setdefault("FIFTYONE_DATABASE_DIR", str(tmp_path_factory.mktemp("fiftyone-db")))
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    fo = pytest.importorskip("fiftyone", reason="fiftyone is not installed (pip install -e '.[fiftyone]')")
    out, dataset, outputs = exported
    try:
        ds = fo.Dataset.from_dir(str(out), dataset_type=fo.types.FiftyOneDataset)
    except Exception as e:  # FiftyOne's errors when its MongoDB cannot start
        if "MongoDB" in str(e) or "mongod" in str(e):
            pytest.skip(f"fiftyone is installed but its database does not run here: {e}")
        raise
    try:
        assert len(ds) == len(dataset.images)
        assert ds.info["smoke"] is True and "SMOKE" in ds.tags
        assert ds.count_sample_tags() == {"SMOKE": len(dataset.images)}
        assert ds.default_classes == sorted(set(dataset.categories.values()))
        schema = ds.get_field_schema()
        for field in LABEL_FIELDS:
            assert schema[field].document_type is fo.Detections
        assert schema["points"].document_type is fo.Keypoints
        assert schema["attention"].document_type is fo.Heatmap
        amodal = read_checked(outputs.amodal, dataset)
        records = {im.id: im for im in dataset.images}
        for sample in ds:
            record = records[sample["image_id"]]
            assert sample.metadata.width == record.width and sample.filepath.startswith(str(out))
            assert len(sample.pred_amodal.detections) == len(record.instances)
            for det in sample.pred_amodal.detections:
                drawn = det.to_segmentation(frame_size=(record.width, record.height), target=1).mask
                assert iou(drawn > 0, rle.decode(amodal.by_gt_id[det.gt_id]["segmentation"])) == 1.0
            points = np.array([p for kp in sample.points.keypoints for p in kp.points])
            assert points.size and points.min() >= 0 and points.max() <= 1
            assert sample.attention.get_map().shape == (record.height, record.width)
    finally:
        ds.delete()
