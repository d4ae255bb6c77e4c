"""Detector proposals (`dataset.proposals`): a COCO results file of boxes becomes the queries
of a run; bad entries are skipped with their reasons and counted; predictions are ranked by
detector score x predicted IoU; the evaluator's AP equals pycocotools' COCOeval run directly
on the same ground-truth and results files; the mIoUs pair by COCOeval's matching rule."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pipeline import masks
from pipeline.datasets.params import DatasetParams, load
from pipeline.datasets.proposals import first_query_id
from pipeline.datasets.record import DatasetError
from pipeline.datasets.skips import (PROPOSAL_BOX, PROPOSAL_CATEGORY, PROPOSAL_IMAGE,
                                     PROPOSAL_MALFORMED)
from pipeline.evaluation import EvaluateParams, evaluate
from pipeline.evaluation.ap import AP_KEYS
from pipeline.evaluation.coco_gt import quietly
from pipeline.evaluation.proposals import MATCH_IOU
from pipeline.evaluation.run_info import undescribed_run
from pipeline.predictions import write_predictions

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample" / "d2sa" / "D2S_amodal_synth.json"
MIN_SCORE = 0.1

# (entry, reason) of the bad entries every proposals file of these tests holds
BAD = [
    ({"image_id": 999, "category_id": 1, "bbox": [1, 1, 10, 10], "score": 0.9}, PROPOSAL_IMAGE),
    ({"image_id": 1, "category_id": 999, "bbox": [1, 1, 10, 10], "score": 0.9}, PROPOSAL_CATEGORY),
    ({"image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10], "score": float("nan")}, PROPOSAL_MALFORMED),
    ({"image_id": 1, "category_id": 1, "bbox": [1, 1, float("nan"), 10], "score": 0.9}, PROPOSAL_MALFORMED),
    ({"image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10]}, PROPOSAL_MALFORMED),
    (17, PROPOSAL_MALFORMED),
    ({"image_id": 1, "category_id": 1, "bbox": [5, 5, 0, 10], "score": 0.9}, PROPOSAL_BOX),
    ({"image_id": 1, "category_id": 1, "bbox": [1000, 5, 20, 10], "score": 0.9}, PROPOSAL_BOX),
]


def write_sample_proposals(path: Path, annotations: Path = SAMPLE, seed: int = 0) -> dict:
    """A detector-like results file for `annotations`: every ground-truth box jittered by a few
    pixels, one false positive per image, one box below MIN_SCORE, and the BAD entries (shuffled
    in). Returns {"entries", "valid" (kept entries, file order), "below"}."""
    data = json.loads(annotations.read_text())
    sizes = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
    rng = np.random.default_rng(seed)
    good = []
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        jitter = rng.uniform(-2, 2, 4)
        good.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                     "bbox": [x + jitter[0], y + jitter[1], w + jitter[2], h + jitter[3]],
                     "score": float(rng.uniform(0.5, 1.0))})
    for image_id, (width, height) in sizes.items():
        good.append({"image_id": image_id, "category_id": data["categories"][0]["id"],
                     "bbox": [width * 0.05, height * 0.05, width * 0.2, height * 0.2],
                     "score": float(rng.uniform(0.2, 0.4))})
    below = {"image_id": data["images"][0]["id"], "category_id": data["categories"][0]["id"],
             "bbox": [10, 10, 20, 20], "score": MIN_SCORE / 2}
    entries = good + [below] + [b for b, _ in BAD]
    order = rng.permutation(len(entries))
    entries = [entries[i] for i in order]
    path.write_text(json.dumps(entries))  # NaN written as NaN, as Python detectors do
    valid = [e for e in entries if any(e is g for g in good)]
    return {"entries": entries, "valid": valid, "below": 1}


@pytest.fixture
def proposals_file(tmp_path) -> tuple[Path, dict]:
    path = tmp_path / "detections.json"
    return path, write_sample_proposals(path)


def _queries(path: Path, **kw):
    return load(DatasetParams(annotations=str(SAMPLE), proposals=str(path), proposal_min_score=MIN_SCORE, **kw))


def test_each_kept_proposal_is_one_query_with_its_box_phrase_and_score(proposals_file):
    path, made = proposals_file
    queries = _queries(path)
    truth = queries.ground_truth
    assert truth is not None and truth.instance_count() == 17 and truth.proposals is None
    assert queries.instance_count() == len(made["valid"])
    first = first_query_id(truth)
    assert first > max(i.id for im in truth.images for i in im.instances)
    by_id = {q.id: (im, q) for im in queries.images for q in im.instances}
    assert len(by_id) == queries.instance_count()
    for index, entry in enumerate(made["entries"]):
        if not any(entry is v for v in made["valid"]):
            assert first + index not in by_id
            continue
        im, q = by_id[first + index]  # the id names the entry's place in the file
        assert im.id == entry["image_id"] and q.category_id == entry["category_id"]
        assert q.category_name == truth.categories[entry["category_id"]]
        assert q.score == entry["score"] and q.amodal_rle is None and q.visible_rle is None
        x, y, w, h = entry["bbox"]
        x0, y0 = max(x, 0), max(y, 0)
        assert q.bbox == pytest.approx((x0, y0, min(x + w, im.width) - x0, min(y + h, im.height) - y0))
    p = queries.proposals
    assert p["path"] == str(path) and p["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (p["count"], p["kept"], p["below_min_score"]) == (len(made["entries"]), len(made["valid"]), 1)
    expected = {}
    for _, reason in BAD:
        expected[reason] = expected.get(reason, 0) + 1
    assert p["skipped"] == dict(sorted(expected.items()))
    skips = [s for s in queries.skips if s.file == str(path)]
    assert sorted(s.reason for s in skips) == sorted(r for _, r in BAD)
    assert all(s.instances == 0 and s.stage == "load" and str(path) in s.message for s in skips)
    assert {s.annotation_id for s in skips} == {i for i, e in enumerate(made["entries"])
                                                if any(e is b for b, _ in BAD)}


def test_max_images_leaves_out_other_images_proposals_uncounted_as_skips(proposals_file):
    path, made = proposals_file
    queries = _queries(path, max_images=1)
    image_id = queries.images[0].id
    assert queries.instance_count() == sum(1 for e in made["valid"] if e["image_id"] == image_id)
    assert queries.proposals["other_images"] > 0
    assert PROPOSAL_IMAGE not in queries.proposals["skipped"]


def test_on_error_stop_stops_at_the_first_bad_proposal_naming_file_and_entry(proposals_file):
    path, made = proposals_file
    first_bad = min(i for i, e in enumerate(made["entries"]) if any(e is b for b, _ in BAD))
    with pytest.raises(DatasetError, match=rf"{path}: proposal {first_bad} "):
        _queries(path, on_error="stop")


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not valid JSON"), ('{"annotations": []}', "must be a JSON list"), (None, "not found")])
def test_malformed_proposals_file_is_one_error_naming_it(tmp_path, content, problem):
    path = tmp_path / "detections.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DatasetError, match=problem) as e:
        _queries(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="dataset.proposal_min_score"):
        DatasetParams(proposal_min_score=1.5)
    with pytest.raises(ValueError, match="dataset.proposals"):
        DatasetParams(proposals="")
    with pytest.raises(ValueError, match="evaluate.proposal_score"):
        EvaluateParams(proposal_score="iou")


def _predictions(queries, seed: int = 1) -> tuple[list[dict], list[dict]]:
    """Predictions as the decode stage writes them: a proposal over a ground-truth object gets
    that object's masks shifted by a pixel or two (or the bare box, some of the time), a false
    positive the box; `score` a made-up predicted IoU, `detector_score` the query's."""
    rng = np.random.default_rng(seed)
    truth = {im.id: im for im in queries.ground_truth.images}
    amodal, visible = [], []
    for im in queries.images:
        for q in im.instances:
            best, best_iou = None, 0.0
            for g in truth[im.id].instances:
                if g.category_id != q.category_id:
                    continue
                iou = mask_utils.iou([list(q.bbox)], [list(g.bbox)], [0])[0][0]
                if iou > best_iou:
                    best, best_iou = g, iou
            box = np.zeros((im.height, im.width), bool)
            x, y, w, h = (int(round(v)) for v in q.bbox)
            box[y:y + h, x:x + w] = True
            if best is not None and best_iou > 0.5 and rng.random() > 0.2:
                shift = tuple(int(s) for s in rng.integers(-2, 3, 2))
                a = np.roll(masks.decode(best.amodal_rle), shift, (0, 1))
                v = np.roll(masks.decode(best.visible_rle), shift, (0, 1))
            else:
                a = v = box
            for out, mask in ((amodal, a), (visible, v)):
                out.append({"image_id": im.id, "category_id": q.category_id, "segmentation": masks.encode(mask),
                            "score": float(rng.uniform(0.3, 1.0)), "gt_id": q.id,
                            "detector_score": q.score})
    return amodal, visible


def _visible_gt_file(annotations: Path, out: Path) -> Path:
    """The annotation file with each instance's visible mask as its segmentation (area = the
    visible area, fully hidden instances left out, as visible AP's ground truth is defined)."""
    data = json.loads(annotations.read_text())
    anns = []
    for ann in data["annotations"]:
        rle = ann["visible_mask"]
        rle = {"size": rle["size"], "counts": rle["counts"].encode() if isinstance(rle["counts"], str) else rle["counts"]}
        area = float(mask_utils.area(rle))
        if area > 0:
            anns.append({**ann, "segmentation": ann["visible_mask"], "area": area})
    out.write_text(json.dumps({**data, "annotations": anns}))
    return out


def _cocoeval_stats(gt_file: Path, results: list[dict], score, tmp: Path) -> list[float]:
    """COCOeval (segm) run directly on the ground-truth file and a results file written here."""
    results_file = tmp / f"results_{gt_file.stem}.json"
    results_file.write_text(json.dumps([{"image_id": e["image_id"], "category_id": e["category_id"],
                                         "segmentation": e["segmentation"], "score": score(e)}
                                        for e in results]))
    gt = quietly(COCO, str(gt_file))
    dt = quietly(gt.loadRes, str(results_file))
    ev = COCOeval(gt, dt, iouType="segm")
    for step in (ev.evaluate, ev.accumulate, ev.summarize):
        quietly(step)
    return [float(v) for v in ev.stats[:len(AP_KEYS)]]


@pytest.mark.parametrize("rule, score", [
    ("det_x_iou", lambda e: e["detector_score"] * e["score"]), ("det", lambda e: e["detector_score"])])
def test_ap_equals_cocoeval_on_the_same_files(proposals_file, tmp_path, rule, score):
    path, _ = proposals_file
    queries = _queries(path)
    amodal, visible = _predictions(queries)
    write_predictions(tmp_path / "pred_amodal.json", amodal)
    write_predictions(tmp_path / "pred_visible.json", visible)
    metrics = evaluate(queries, tmp_path / "pred_amodal.json", tmp_path / "pred_visible.json",
                       tmp_path / "reports", EvaluateParams(proposal_score=rule), run=undescribed_run("test"),
                       skips=list(queries.skips))
    want_amodal = _cocoeval_stats(SAMPLE, amodal, score, tmp_path)
    want_visible = _cocoeval_stats(_visible_gt_file(SAMPLE, tmp_path / "visible_gt.json"), visible, score, tmp_path)
    for key, a, v in zip(AP_KEYS, want_amodal, want_visible):
        for got, want in ((metrics["amodal"][key], a), (metrics["visible"][key], v)):
            assert (got is None and want < 0) or got == pytest.approx(want, abs=1e-12), key
    assert 0.2 < metrics["amodal"]["AP50"] < 1.0  # misses and false positives both count
    assert metrics["n_gt"] == 17 and metrics["n_pred"] == queries.instance_count()

    p = metrics["protocol"]
    assert p["proposals"]["path"] == str(path) and p["proposals"]["score"] == rule
    assert p["proposals"]["kept"] == queries.instance_count() and "SAMEO" in p["comparability"]
    assert str(MATCH_IOU) in p["miou"]
    assert set(metrics["skipped"]["reasons"]) == {r for _, r in BAD}
    m = metrics["proposal_matches"]
    assert m["matched"] + m["ground_truth_unmatched"] == 17
    assert m["matched"] + m["predictions_unmatched"] == queries.instance_count()
    assert sum(metrics["buckets"][b]["n"] for b in metrics["buckets"]) == m["matched"]
    assert metrics["miou"]["amodal_full"] > MATCH_IOU  # matched pairs only, by the rule
    report = (tmp_path / "reports" / "report.md").read_text()
    assert str(path) in report and queries.proposals["sha256"] in report and "false positives" in report


def test_matching_is_greedy_by_score_one_ground_truth_each(proposals_file, tmp_path):
    """Two predictions on one object: the higher-scored one takes it, the other is a false
    positive, whatever their order in the file."""
    from pipeline.evaluation.checked_predictions import read_checked
    from pipeline.evaluation.proposals import match, ranked

    path, _ = proposals_file
    queries = _queries(path)
    image = next(im for im in queries.images if len(im.instances) >= 2)
    truth = next(im for im in queries.ground_truth.images if im.id == image.id).instances[0]
    a, b = image.instances[:2]
    gt_mask = masks.decode(truth.amodal_rle)
    entries = [{"image_id": image.id, "category_id": truth.category_id, "segmentation": masks.encode(gt_mask),
                "score": s, "gt_id": q.id, "detector_score": 1.0} for q, s in ((a, 0.6), (b, 0.9))]
    file = tmp_path / "pred.json"
    for order in (entries, entries[::-1]):
        # both on the ground-truth object's category, so they compete for it
        qs = [q.__class__(**{**q.__dict__, "category_id": truth.category_id}) for q in (a, b)]
        image_q = image.__class__(image.id, image.path, image.width, image.height, tuple(qs))
        one = queries.__class__(**{**queries.__dict__, "images": (image_q,)})
        write_predictions(file, order)
        pairs = match(one, ranked(read_checked(file, one).entries, "det_x_iou", file))
        assert pairs == {b.id: truth.id}
    assert math.isclose(ranked(entries, "det_x_iou", file)[1]["score"], 0.9)


def test_ground_truth_only_decode_settings_are_refused_under_proposals():
    from pipeline.decoding.params import DecodeParams

    DecodeParams().check_without_ground_truth("dataset.proposals")  # the defaults need no ground truth
    with pytest.raises(ValueError, match="decode.modal_given .* dataset.proposals"):
        DecodeParams(modal_given=True).check_without_ground_truth("dataset.proposals")
    with pytest.raises(ValueError, match="decode.occluders 'gt' .* dataset.proposals"):
        DecodeParams(occluders="gt").check_without_ground_truth("dataset.proposals")


def test_fingerprint_stage_writes_the_files_sha256_or_null(proposals_file, tmp_path, monkeypatch):
    import yaml

    from stages import proposals as stage

    path, _ = proposals_file
    monkeypatch.chdir(tmp_path)
    for value, want in ((None, {"path": None}),
                        (str(path), {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})):
        Path("params.yaml").write_text(yaml.safe_dump({"dataset": {"proposals": value}}))
        assert stage.main(["--params", "params.yaml"]) == want
        assert json.loads(Path("cache/proposals.json").read_text()) == want
