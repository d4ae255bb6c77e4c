"""Looking at a run made on detector proposals: visualize, the gallery and the FiftyOne export
show the queries paired with ground truth as evaluate pairs them (`load_shown_dataset`)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline import masks
from pipeline.export.fiftyone import export_fiftyone
from pipeline.finished_run import load_shown_dataset
from pipeline.gallery.build import build_gallery
from pipeline.visualize import RunOutputs, visualize_run


def _proposals(annotations: Path) -> Path:
    """Every ground-truth box jittered by a pixel (score 0.9) and one false positive per image."""
    data = json.loads(annotations.read_text())
    rng = np.random.default_rng(0)
    entries = [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 0.9,
                "bbox": [float(v) + float(rng.uniform(-1, 1)) for v in a["bbox"]]} for a in data["annotations"]]
    entries += [{"image_id": im["id"], "category_id": data["categories"][0]["id"], "score": 0.3,
                 "bbox": [2.0, 2.0, 10.0, 10.0]} for im in data["images"]]
    path = annotations.parent / "detections.json"
    path.write_text(json.dumps(entries))
    return path


def _outputs(root: Path) -> RunOutputs:
    d = RunOutputs()
    return RunOutputs(root / d.cache, root / d.points, root / d.visible, root / d.amodal)


def _predict_the_truth(root: Path, truth, boxes_of_queries) -> int:
    """Overwrite the decoded masks of each query made from a ground-truth box with that
    instance's masks (a perfect segmenter); returns the number of such queries."""
    gt = {inst.id: inst for im in truth.images for inst in im.instances}
    n = 0
    for name, field in (("pred_amodal.json", "amodal_rle"), ("pred_visible.json", "visible_rle")):
        path = root / "cache" / name
        entries = json.loads(path.read_text())
        for e in entries:
            source = boxes_of_queries.get(e["gt_id"])
            if source is not None:
                e["segmentation"] = getattr(gt[source], field)
                n += name == "pred_amodal.json"
        path.write_text(json.dumps(entries))
    return n


@pytest.fixture(scope="module")
def run(tmp_path_factory, finished_smoke_run):
    root = tmp_path_factory.mktemp("proposal_run")
    truth = finished_smoke_run(root, 2, seed=5, width=160, height=120, proposals=_proposals)
    queries = load_shown_dataset(root / "params.yaml", _outputs(root))
    assert queries.proposals is not None and queries.ground_truth is not None
    # the query made from each ground-truth box: proposals keep the file's order, the
    # annotations' first, then the false positives
    annotations = json.loads(Path(truth.annotation_file).read_text())["annotations"]
    from_gt = {queries.proposals["first_query_id"] + i: a["id"] for i, a in enumerate(annotations)}
    assert set(from_gt.values()) == {inst.id for im in truth.images for inst in im.instances}
    assert queries.instance_count() == len(annotations) + len(truth.images)
    assert _predict_the_truth(root, truth, from_gt) == len(annotations) >= 3
    return root, truth, from_gt


def test_the_shown_dataset_pairs_queries_with_ground_truth(run):
    root, truth, from_gt = run
    shown = load_shown_dataset(root / "params.yaml", _outputs(root))
    gt = {inst.id: inst for im in truth.images for inst in im.instances}
    queries = {inst.id: inst for im in shown.images for inst in im.instances}
    assert len(queries) == len(gt) + len(truth.images)
    for q, inst in queries.items():
        if q in from_gt:
            assert inst.amodal_rle == gt[from_gt[q]].amodal_rle
            assert inst.occlusion_rate == gt[from_gt[q]].occlusion_rate
        else:  # the false positives
            assert inst.amodal_rle is None and inst.occlusion_rate is None


def test_visualize_draws_the_matched_queries(run, tmp_path):
    root, truth, from_gt = run
    outputs = _outputs(root)
    paths = visualize_run(load_shown_dataset(root / "params.yaml", outputs), outputs, 50, tmp_path)
    assert len(paths) == len(from_gt)
    assert sorted(int(p.stem.rsplit("instance", 1)[1]) for p in paths) == sorted(from_gt)


def test_visualize_with_no_query_matched_is_one_clear_error(run, tmp_path):
    root, _, _ = run
    copy = tmp_path / "run"
    shutil.copytree(root, copy)
    outputs = _outputs(copy)
    for path in (outputs.amodal, outputs.visible):  # empty masks: they match nothing
        entries = json.loads(path.read_text())
        empty = masks.encode(np.zeros(entries[0]["segmentation"]["size"], bool))
        path.write_text(json.dumps([{**e, "segmentation": empty} for e in entries]))
    shown = load_shown_dataset(copy / "params.yaml", outputs)
    with pytest.raises(ValueError, match=r"no proposal of .*detections.json matches a ground-truth instance"):
        visualize_run(shown, outputs, 3, tmp_path / "figures")


def test_gallery_cards_are_the_matched_queries(run, tmp_path):
    root, _, from_gt = run
    outputs = _outputs(root)
    summary = build_gallery(load_shown_dataset(root / "params.yaml", outputs), outputs, tmp_path / "gallery")
    assert summary["cards"] == len(from_gt)
    rows = (tmp_path / "gallery" / "gallery.csv").read_text().splitlines()[1:]
    assert sorted(int(r.split(",")[0]) for r in rows) == sorted(from_gt)
    assert all(float(r.split(",")[3]) == pytest.approx(1.0) for r in rows)  # iou_amodal of a perfect mask


def test_export_has_the_annotated_truth_and_every_query(run, tmp_path):
    root, truth, from_gt = run
    outputs = _outputs(root)
    summary = export_fiftyone(load_shown_dataset(root / "params.yaml", outputs), outputs, tmp_path / "fo")
    samples = json.loads((tmp_path / "fo" / "samples.json").read_text())["samples"]
    gt_ids = sorted(d["gt_id"] for s in samples for d in s["ground_truth_amodal"]["detections"])
    assert gt_ids == sorted(inst.id for im in truth.images for inst in im.instances)
    preds = [d for s in samples for d in s["pred_amodal"]["detections"]]
    assert summary["predictions"] == len(preds) == len(from_gt) + len(truth.images)
    for d in preds:
        assert d["matched"] is (d["gt_id"] in from_gt) and d["detector_score"] in (0.9, 0.3)
        assert (d["iou"] == pytest.approx(1.0)) if d["matched"] else d["iou"] is None
