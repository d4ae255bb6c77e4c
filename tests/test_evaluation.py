"""The evaluator: AP equal to a direct pycocotools run, hand-counted mIoU, buckets,
metrics.json shape, smoke flag, report and plot files, and every error path."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pipeline.datasets.record import AmodalDataset, ImageRecord, Instance
from pipeline.datasets.skips import IMAGE_UNREADABLE, Skip
from pipeline.evaluation import EvaluateParams, evaluate
from pipeline.evaluation.miou import bucket_of
from pipeline.evaluation.run_info import undescribed_run
from pipeline.masks import decode, encode
from pipeline.predictions import PredictionFormatError, write_predictions

AP_KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"]
FIGURES = ["amodal_full", "amodal_occluded", "visible"]


# ---------------------------------------------------------------- builders

def box(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """HxW bool mask, True on rows y0..y1-1 and columns x0..x1-1."""
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def instance(iid: int, cat: int, amodal: np.ndarray, visible: np.ndarray) -> Instance:
    a, v = encode(amodal), encode(visible)
    return Instance(id=iid, category_id=cat, category_name=f"cat{cat}",
                    bbox=tuple(mask_utils.toBbox(mask_utils.encode(
                        np.asfortranarray(amodal.astype(np.uint8)))).tolist()),
                    amodal_rle=a, visible_rle=v,
                    occlusion_rate=float(1 - visible.sum() / amodal.sum()))


def dataset(images: list[tuple[int, int, int, list[Instance]]], n_cats: int = 2) -> AmodalDataset:
    return AmodalDataset(
        name="test", annotation_file=Path("gt.json"),
        images=tuple(ImageRecord(id=i, path=Path(f"{i}.png"), width=w, height=h,
                                 instances=tuple(insts)) for i, h, w, insts in images),
        categories={c: f"cat{c}" for c in range(1, n_cats + 1)})


def pred(image_id: int, cat: int, mask: np.ndarray, score: float, gt_id=None, **extra) -> dict:
    entry = {"image_id": image_id, "category_id": cat, "segmentation": encode(mask), "score": score}
    if gt_id is not None:
        entry["gt_id"] = gt_id
    return {**entry, **extra}


def run(tmp_path: Path, ds: AmodalDataset, amodal: list[dict], visible: list[dict],
        **kwargs) -> dict:
    write_predictions(tmp_path / "pred_amodal.json", amodal)
    write_predictions(tmp_path / "pred_visible.json", visible)
    kwargs.setdefault("run", undescribed_run("built by the test"))
    return evaluate(ds, tmp_path / "pred_amodal.json", tmp_path / "pred_visible.json",
                    tmp_path / "out", **kwargs)


def scene(seed: int = 0, n_images: int = 6, h: int = 48, w: int = 64) -> AmodalDataset:
    """Random scenes of overlapping boxes: later boxes occlude earlier ones."""
    rng = np.random.default_rng(seed)
    images, next_id = [], 1
    for image_id in range(1, n_images + 1):
        boxes = []
        for _ in range(rng.integers(2, 5)):
            bh, bw = rng.integers(4, h // 2), rng.integers(4, w // 2)
            y0, x0 = rng.integers(0, h - bh), rng.integers(0, w - bw)
            boxes.append(box(h, w, y0, y0 + bh, x0, x0 + bw))
        insts = []
        for k, amodal in enumerate(boxes):
            covered = np.zeros((h, w), bool)
            for later in boxes[k + 1:]:
                covered |= later
            visible = amodal & ~covered
            if visible.any():  # keep every instance visible (see the fully-occluded test)
                insts.append(instance(next_id, int(rng.integers(1, 3)), amodal, visible))
                next_id += 1
        images.append((image_id, h, w, insts))
    return dataset(images)


def gt_masks(ds: AmodalDataset):
    for im in ds.images:
        for inst in im.instances:
            yield im, inst, mask_utils.decode(_bytes(inst.amodal_rle)).astype(bool), \
                mask_utils.decode(_bytes(inst.visible_rle)).astype(bool)


def _bytes(rle: dict) -> dict:
    return {"size": rle["size"], "counts": rle["counts"].encode()}


def direct_cocoeval(tmp_path: Path, ds: AmodalDataset, view: str, preds: list[dict]) -> np.ndarray:
    """COCOeval stats the textbook way: GT JSON file + loadRes(results file)."""
    anns = []
    for im in ds.images:
        for inst in im.instances:
            rle = inst.amodal_rle if view == "amodal" else inst.visible_rle
            area = float(mask_utils.area(_bytes(rle)))
            anns.append({"id": inst.id, "image_id": im.id, "category_id": inst.category_id,
                         "segmentation": rle, "area": area, "iscrowd": 0,
                         "bbox": mask_utils.toBbox(_bytes(rle)).tolist()})
    gt_file = tmp_path / f"direct_gt_{view}.json"
    gt_file.write_text(json.dumps({
        "images": [{"id": im.id, "width": im.width, "height": im.height} for im in ds.images],
        "annotations": anns,
        "categories": [{"id": c, "name": n} for c, n in ds.categories.items()]}))
    res_file = tmp_path / f"direct_res_{view}.json"
    res_file.write_text(json.dumps([{k: p[k] for k in ("image_id", "category_id", "segmentation", "score")}
                                    for p in preds]))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        e = COCOeval(gt, gt.loadRes(str(res_file)), "segm")
        e.evaluate(); e.accumulate(); e.summarize()
    return e.stats


def predictions_from(ds: AmodalDataset, seed: int, shift: int = 0, drop: float = 0.0,
                     extra: int = 0):
    """Amodal and visible predictions: GT masks shifted right by `shift` px, a fraction
    `drop` of instances left out, `extra` false positives on random boxes."""
    rng = np.random.default_rng(seed)
    amodal, visible = [], []
    for im, inst, a, v in gt_masks(ds):
        if rng.random() < drop:
            continue
        score = float(rng.uniform(0.3, 1.0))
        amodal.append(pred(im.id, inst.category_id, np.roll(a, shift, axis=1), score, inst.id))
        visible.append(pred(im.id, inst.category_id, np.roll(v, shift, axis=1), score, inst.id))
    for _ in range(extra):
        im = ds.images[int(rng.integers(len(ds.images)))]
        y0, x0 = rng.integers(0, im.height - 6), rng.integers(0, im.width - 6)
        m = box(im.height, im.width, y0, y0 + 6, x0, x0 + 6)
        cat, score = int(rng.integers(1, 3)), float(rng.uniform(0, 1))
        amodal.append(pred(im.id, cat, m, score))
        visible.append(pred(im.id, cat, m, score))
    return amodal, visible


# ---------------------------------------------------------------- AP against pycocotools

@pytest.mark.parametrize("case", [
    dict(shift=0), dict(shift=2), dict(shift=5, drop=0.3), dict(shift=1, extra=8),
    dict(shift=0, drop=1.0),
])
def test_ap_equals_direct_cocoeval(tmp_path, case):
    ds = scene(seed=3)
    amodal, visible = predictions_from(ds, seed=7, **case)
    metrics = run(tmp_path, ds, amodal, visible)
    for view, preds in (("amodal", amodal), ("visible", visible)):
        if not preds:  # loadRes cannot take an empty list: COCOeval then scores 0 everywhere
            assert all(metrics[view][k] in (0.0, None) for k in AP_KEYS)
            continue
        stats = direct_cocoeval(tmp_path, ds, view, preds)
        for k, s in zip(AP_KEYS, stats):
            assert metrics[view][k] == (None if s < 0 else pytest.approx(s, abs=1e-12)), (view, k)


def test_perfect_predictions_score_one(tmp_path):
    ds = scene(seed=1)
    metrics = run(tmp_path, ds, *predictions_from(ds, seed=0))
    for view in ("amodal", "visible"):
        assert metrics[view]["AP"] == pytest.approx(1.0)
        assert metrics[view]["AR100"] == pytest.approx(1.0)
        assert metrics[view]["APl"] is None  # no object above 96^2 px in 48x64 images
    assert metrics["miou"] == {"amodal_full": 1.0, "amodal_occluded": 1.0, "visible": 1.0}


def test_shift_lowers_ap_and_miou(tmp_path):
    ds = scene(seed=2)
    exact = run(tmp_path / "a", ds, *predictions_from(ds, seed=0))
    shifted = run(tmp_path / "b", ds, *predictions_from(ds, seed=0, shift=3))
    for view in ("amodal", "visible"):
        assert shifted[view]["AP75"] < exact[view]["AP75"]
    assert shifted["miou"]["amodal_full"] < 1.0


def test_fully_occluded_instances_stay_out_of_visible_ap(tmp_path):
    h, w = 20, 20
    front = box(h, w, 0, 12, 0, 12)
    hidden = box(h, w, 2, 8, 2, 8)  # entirely behind `front`
    ds = dataset([(1, h, w, [instance(1, 1, hidden, np.zeros((h, w), bool)),
                             instance(2, 1, front, front)])], n_cats=1)
    empty = np.zeros((h, w), bool)
    metrics = run(tmp_path, ds,
                  [pred(1, 1, hidden, 0.7, 1), pred(1, 1, front, 0.8, 2)],
                  [pred(1, 1, empty, 0.7, 1), pred(1, 1, front, 0.8, 2)])
    assert metrics["visible"]["AP"] == pytest.approx(1.0)
    assert metrics["visible"]["AR100"] == pytest.approx(1.0)
    assert metrics["amodal"]["AP"] == pytest.approx(1.0)
    # Empty predicted visible mask for an empty GT visible mask: IoU(empty, empty) = 1.
    assert metrics["miou"]["visible"] == 1.0
    assert metrics["n_gt"] == 2
    assert "2 instances, 1 with a visible part" in (tmp_path / "out" / "report.md").read_text()
    # An empty predicted mask is still a detection for COCOeval: ranked first, it is a
    # false positive before the true one (precision 1/2 at every recall).
    ranked_first = run(tmp_path / "b", ds,
                       [pred(1, 1, hidden, 0.9, 1), pred(1, 1, front, 0.8, 2)],
                       [pred(1, 1, empty, 0.9, 1), pred(1, 1, front, 0.8, 2)])
    assert ranked_first["visible"]["AP"] == pytest.approx(0.5)


# ---------------------------------------------------------------- mIoU by hand

def test_miou_hand_counted(tmp_path):
    h, w = 10, 10
    gt_amodal = box(h, w, 0, 4, 0, 5)    # 20 px
    gt_visible = box(h, w, 0, 4, 0, 2)   # 8 px: hidden part = columns 2-4, 12 px, rate 0.6
    p_amodal = box(h, w, 0, 4, 1, 6)     # 20 px; P&A = cols 1-4 = 16, P|A = cols 0-5 = 24
    p_visible = box(h, w, 0, 4, 0, 1)    # 4 px; inside V: 4 / 8
    ds = dataset([(1, h, w, [instance(5, 1, gt_amodal, gt_visible)])], n_cats=1)
    m = run(tmp_path, ds, [pred(1, 1, p_amodal, 0.9, 5)], [pred(1, 1, p_visible, 0.9, 5)])
    assert m["miou"]["amodal_full"] == pytest.approx(16 / 24, abs=1e-15)
    # P-V = cols 2-5 (16), A-V = cols 2-4 (12): intersection 12, union 16
    assert m["miou"]["amodal_occluded"] == pytest.approx(12 / 16, abs=1e-15)
    assert m["miou"]["visible"] == pytest.approx(4 / 8, abs=1e-15)
    assert m["buckets"]["heavy"] == {"n": 1, "amodal_full": m["miou"]["amodal_full"],
                                     "amodal_occluded": 0.75, "visible": 0.5}
    for b in ("none", "partial"):
        assert m["buckets"][b] == {"n": 0, "amodal_full": None, "amodal_occluded": None,
                                   "visible": None}


def test_miou_matches_bitmap_counts_also_when_visible_leaks_outside_amodal(tmp_path):
    """Random masks, visible NOT inside amodal (as in some KINS annotations)."""
    rng = np.random.default_rng(11)
    h, w = 16, 16
    insts, amodal, visible, expected = [], [], [], []
    for iid in range(1, 41):
        a = rng.random((h, w)) < 0.5
        a[0, 0] = True
        v = rng.random((h, w)) < 0.3
        p, pv = rng.random((h, w)) < 0.5, rng.random((h, w)) < 0.3
        if iid % 10 == 0:
            v = a.copy()  # unoccluded: no hidden part
        insts.append(Instance(id=iid, category_id=1, category_name="cat1", bbox=(0, 0, w, h),
                              amodal_rle=encode(a), visible_rle=encode(v),
                              occlusion_rate=float(max(0.0, 1 - v.sum() / a.sum()))))
        amodal.append(pred(1, 1, p, 0.5, iid))
        visible.append(pred(1, 1, pv, 0.5, iid))
        iou = lambda x, y: (x & y).sum() / (x | y).sum()
        hidden = a & ~v
        expected.append((iou(p, a), iou(p & ~v, hidden) if hidden.any() else None, iou(pv, v)))
    m = run(tmp_path, dataset([(1, h, w, insts)], n_cats=1), amodal, visible)
    assert m["miou"]["amodal_full"] == pytest.approx(np.mean([e[0] for e in expected]), abs=1e-12)
    assert m["miou"]["amodal_occluded"] == pytest.approx(
        np.mean([e[1] for e in expected if e[1] is not None]), abs=1e-12)
    assert m["miou"]["visible"] == pytest.approx(np.mean([e[2] for e in expected]), abs=1e-12)


def test_miou_counts_only_instances_with_a_prediction(tmp_path):
    h, w = 10, 10
    a1, a2 = box(h, w, 0, 4, 0, 4), box(h, w, 5, 9, 5, 9)
    ds = dataset([(1, h, w, [instance(1, 1, a1, a1), instance(2, 1, a2, a2)])], n_cats=1)
    m = run(tmp_path, ds, [pred(1, 1, a1, 0.9, 1)], [pred(1, 1, box(h, w, 0, 4, 0, 2), 0.9, 1)])
    assert m["buckets"]["none"]["n"] == 1
    assert m["miou"] == {"amodal_full": 1.0, "amodal_occluded": None, "visible": 0.5}
    assert m["n_gt"] == 2 and m["n_pred"] == 1


def test_predictions_without_gt_id_give_ap_but_no_miou(tmp_path):
    ds = scene(seed=4)
    amodal, visible = predictions_from(ds, seed=0)
    for e in amodal + visible:
        del e["gt_id"]
    m = run(tmp_path, ds, amodal, visible)
    assert m["amodal"]["AP"] == pytest.approx(1.0)
    assert m["miou"] == {"amodal_full": None, "amodal_occluded": None, "visible": None}
    assert all(m["buckets"][b]["n"] == 0 for b in ("none", "partial", "heavy"))


def test_bucket_edges():
    assert bucket_of(0.0) == "none"
    assert bucket_of(1e-9) == "partial"
    assert bucket_of(0.25) == "partial"
    assert bucket_of(np.nextafter(0.25, 1)) == "heavy"
    assert bucket_of(1.0) == "heavy"


def test_buckets_assign_instances_by_gt_occlusion_rate(tmp_path):
    h, w = 20, 20
    a = box(h, w, 0, 4, 0, 5)  # 20 px
    rates = {1: (a, 0.0), 2: (box(h, w, 0, 3, 0, 5), 0.25), 3: (box(h, w, 0, 4, 0, 1), 0.8)}
    insts = []
    for iid, (v, rate) in rates.items():
        inst = instance(iid, 1, a, v)
        assert inst.occlusion_rate == rate
        insts.append(inst)
    ds = dataset([(1, h, w, insts[:2]), (2, h, w, insts[2:])], n_cats=1)
    amodal = [pred(1, 1, a, 0.9, 1), pred(1, 1, a, 0.8, 2), pred(2, 1, a, 0.7, 3)]
    visible = [pred(1, 1, a, 0.9, 1), pred(1, 1, rates[2][0], 0.8, 2),
               pred(2, 1, rates[3][0], 0.7, 3)]
    m = run(tmp_path, ds, amodal, visible, params=EvaluateParams(occlusion_bins=4))
    assert [m["buckets"][b]["n"] for b in ("none", "partial", "heavy")] == [1, 1, 1]
    assert m["buckets"]["none"]["amodal_occluded"] is None
    assert m["buckets"]["partial"]["amodal_occluded"] == 1.0
    rows = list(csv.DictReader(open(tmp_path / "out" / "plots" / "miou_by_occlusion.csv")))
    assert [int(r["n"]) for r in rows] == [1, 1, 0, 1]  # 0 in [0,.25), .25 in [.25,.5), .8
    assert rows[2]["amodal_full"] == ""  # empty bin: undefined, not 0


# ---------------------------------------------------------------- outputs

def test_metrics_json_shape_and_key_order(tmp_path):
    ds = scene(seed=5)
    run(tmp_path, ds, *predictions_from(ds, seed=1, shift=1, extra=3))
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert list(m) == ["unit", "protocol", "run", "counts", "amodal", "visible", "miou", "buckets",
                       "n_gt", "n_pred", "smoke", "skipped"]
    assert m["unit"] == "fraction" and m["protocol"]["amodal_ap"] == "reported"
    assert m["run"] == {"source": "unknown: built by the test"}
    assert m["skipped"] is None  # no skip list given
    assert list(m["amodal"]) == AP_KEYS and list(m["visible"]) == AP_KEYS
    assert list(m["miou"]) == FIGURES
    assert list(m["buckets"]) == ["none", "partial", "heavy"]
    for b in m["buckets"].values():
        assert list(b) == ["n"] + FIGURES
    assert m["n_gt"] == ds.instance_count() and m["n_pred"] == ds.instance_count() + 3
    assert m["smoke"] is False
    values = [v for view in ("amodal", "visible") for v in m[view].values()] + list(m["miou"].values())
    assert all(v is None or 0.0 <= v <= 1.0 for v in values)


@pytest.mark.parametrize("which", ["amodal", "visible", None])
def test_smoke_flag_propagates(tmp_path, which):
    ds = scene(seed=6, n_images=2)
    amodal, visible = predictions_from(ds, seed=0)
    for name, entries in (("amodal", amodal), ("visible", visible)):
        for e in entries:
            e["smoke"] = name == which
    m = run(tmp_path, ds, amodal, visible)
    smoke = which is not None
    assert m["smoke"] is smoke
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["smoke"] is smoke
    report = (tmp_path / "out" / "report.md").read_text()
    assert ("SMOKE RUN" in report.splitlines()[2]) is smoke
    for name in ("pr_curves.csv", "miou_by_occlusion.csv"):
        rows = list(csv.DictReader(open(tmp_path / "out" / "plots" / name)))
        assert {r["smoke"] for r in rows} == {"true" if smoke else "false"}


def test_report_and_plot_files(tmp_path):
    ds = scene(seed=8)
    amodal, visible = predictions_from(ds, seed=2, shift=1, extra=5)
    m = run(tmp_path, ds, amodal, visible)
    out = tmp_path / "out"
    report = (out / "report.md").read_text()
    assert "| AP50 |" in report and "| amodal_occluded |" in report
    assert f"| AP | {m['amodal']['AP']:.3f} | {m['visible']['AP']:.3f} |" in report
    assert "fractions in [0, 1]" in report and "AR1, AR10, AR100 are" in report
    for png in ("pr_curves.png", "miou_by_occlusion.png"):
        assert (out / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(open(out / "plots" / "pr_curves.csv")))
    assert list(rows[0]) == ["recall", "amodal_iou50", "amodal_iou75", "visible_iou50",
                             "visible_iou75", "smoke"]
    assert len(rows) == 101
    # COCOeval's AP50 is the mean of this curve over its 101 recall thresholds.
    for view in ("amodal", "visible"):
        assert np.mean([float(r[f"{view}_iou50"]) for r in rows]) == pytest.approx(
            m[view]["AP50"], abs=1e-12)
        assert np.mean([float(r[f"{view}_iou75"]) for r in rows]) == pytest.approx(
            m[view]["AP75"], abs=1e-12)
    binned = list(csv.DictReader(open(out / "plots" / "miou_by_occlusion.csv")))
    assert len(binned) == 10
    assert sum(int(r["n"]) for r in binned) == ds.instance_count()


# ---------------------------------------------------------------- errors

def _error_case(tmp_path, mutate, match, which="amodal"):
    ds = scene(seed=9, n_images=3)
    amodal, visible = predictions_from(ds, seed=0)
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text("previous")
    entries = amodal if which == "amodal" else visible
    mutate(entries, ds)
    with pytest.raises(PredictionFormatError, match=match) as info:
        run(tmp_path, ds, amodal, visible)
    assert f"pred_{which}.json" in str(info.value)
    assert (out / "metrics.json").read_text() == "previous"  # nothing already written is lost
    assert not (out / "report.md").exists()
    return str(info.value)


def test_error_unknown_image_id(tmp_path):
    def mutate(e, ds): e[2]["image_id"] = 999
    assert "entry 2" in _error_case(tmp_path, mutate, "image_id 999 is not an image")


def test_error_unknown_gt_id(tmp_path):
    def mutate(e, ds): e[1]["gt_id"] = 12345
    assert "entry 1" in _error_case(tmp_path, mutate, "gt_id 12345 is not an instance", "visible")


def test_error_gt_id_of_another_image(tmp_path):
    def mutate(e, ds):
        other = next(p for p in e if p["image_id"] != e[0]["image_id"])
        e[0]["gt_id"], other["gt_id"] = other["gt_id"], e[0]["gt_id"]
    _error_case(tmp_path, mutate, "belongs to image")


def test_error_unknown_category(tmp_path):
    def mutate(e, ds): e[0]["category_id"] = 77
    _error_case(tmp_path, mutate, "category_id 77 is not a category")


def test_error_bad_counts(tmp_path):
    def mutate(e, ds): e[3]["segmentation"]["counts"] = encode(np.ones((10, 10), bool))["counts"]
    assert "entry 3" in _error_case(tmp_path, mutate, r"malformed RLE \(run lengths .* sum to 48\*64, got sum 100")


def test_error_garbled_counts(tmp_path):
    def mutate(e, ds): e[0]["segmentation"]["counts"] += "z"
    _error_case(tmp_path, mutate, r"malformed RLE \(invalid character")


def test_error_truncated_counts(tmp_path):
    def mutate(e, ds): e[1]["segmentation"]["counts"] += "a"  # 'a' says "more follows"
    _error_case(tmp_path, mutate, r"entry 1 .*malformed RLE \(truncated", "visible")


def test_error_mask_size_differs_from_image(tmp_path):
    def mutate(e, ds): e[0]["segmentation"] = encode(np.ones((10, 10), bool))
    _error_case(tmp_path, mutate, r"RLE size \[10, 10\] does not match the image size \[48, 64\]",
                "visible")


def test_error_segmentation_not_rle(tmp_path):
    def mutate(e, ds): e[0]["segmentation"] = [[0, 0, 5, 0, 5, 5]]
    _error_case(tmp_path, mutate, "not a COCO RLE")


def test_error_duplicate_gt_id(tmp_path):
    def mutate(e, ds): e.append(dict(e[0], score=0.1))
    _error_case(tmp_path, mutate, "second prediction for gt_id")


def test_error_non_finite_score(tmp_path):
    def mutate(e, ds): e[0]["score"] = float("nan")
    _error_case(tmp_path, mutate, "not a finite number")


def test_error_unpaired_files(tmp_path):
    def mutate(e, ds): e[0]["gt_id"] = None
    _error_case(tmp_path, mutate, "gt_ids differ between")


def test_error_missing_file(tmp_path):
    ds = scene(seed=9, n_images=1)
    with pytest.raises(PredictionFormatError, match="not found"):
        evaluate(ds, tmp_path / "nope.json", tmp_path / "nope2.json", tmp_path / "out",
                 run=undescribed_run("test"))


def test_error_non_integer_mask_size(tmp_path):
    def mutate(e, ds): e[0]["segmentation"]["size"] = ["forty-eight", 64]
    _error_case(tmp_path, mutate, r"entry 0 \(image_id 1, gt_id 1\): ")


# ---------------------------------------------------------------- protocol and counts

def test_counts_tally_the_per_instance_fields(tmp_path):
    ds = scene(seed=4, n_images=3)
    amodal, visible = predictions_from(ds, seed=3, shift=1)
    n = len(amodal)
    assert n >= 6
    sources = ["vlm", "vlm_none", "overlap_parse_failed", "overlap_parse_failed", None, "vlm"]
    for i, (a, v) in enumerate(zip(amodal, visible)):
        v["fallback"] = a["fallback"] = {0: "flat", 1: "empty", 2: "flat"}.get(i, "")
        a["occluder_source"] = sources[i] if i < len(sources) else "overlap"
        a["completion"] = "occluder_hull"
        a["amodal_source"] = "completion" if i % 2 else "visible: no occluder found"
        a["occluder_ids"] = [1, 2]  # a list: not tallied
    for i in (1, 4):  # amodal = the visible prediction it came from
        amodal[i]["segmentation"] = visible[i]["segmentation"]
    equal = sum(np.array_equal(decode(a["segmentation"]), decode(v["segmentation"]))
                for a, v in zip(amodal, visible))  # also the unoccluded instances
    assert 2 <= equal < n
    skip = Skip("extract", IMAGE_UNREADABLE, "17.jpg", 17, None, 2, "17.jpg: truncated")
    visible[0]["points_sent"] = {"points": [[1, 1], [2, 2], [3, 3]], "labels": [1, 0, 1], "box": [0, 0, 5, 5]}
    visible[1]["points_sent"] = {"points": [[1, 1]], "labels": [1], "box": None}
    m = run(tmp_path, ds, amodal, visible, skips=[skip])
    c = m["counts"]
    assert c["images"] == 3 and c["instances"] == n and c["skipped_images"] == 1
    assert c["points_sent"] == {"positive": 3, "negative": 1, "box": 1}
    assert c["fallbacks"] == {"total": 3, "empty": 1, "flat": 2}
    assert c["occluder_sources"] == {"not used": 1, "overlap": n - 6, "overlap_parse_failed": 2,
                                     "vlm": 2, "vlm_none": 1}
    assert c["amodal_equals_visible"] == equal
    assert c["amodal_fields"]["completion"] == {"occluder_hull": n}
    assert c["amodal_fields"]["amodal_source"] == {"completion": n // 2,
                                                   "visible: no occluder found": n - n // 2}
    assert "occluder_ids" not in c["amodal_fields"] and "fallback" not in c["amodal_fields"]
    report = (tmp_path / "out" / "report.md").read_text()
    header = report.split("## Mask AP")[0]
    assert "## Protocol" in header and "## Run" in header and "## Counts" in header
    assert '"overlap_parse_failed": 2' in header and "Not comparable to published" in header
    assert "- points_sent: `{\"positive\": 3, \"negative\": 1, \"box\": 1}`" in header


def test_modal_given_withholds_amodal_ap_and_reports_miou(tmp_path):
    ds = scene(seed=2, n_images=3)
    amodal, visible = predictions_from(ds, seed=1, shift=1)
    gt_visible = {inst.id: inst.visible_rle for im in ds.images for inst in im.instances}
    for a in amodal:  # completed from the GT visible mask itself: amodal = GT visible, score 1
        a.update(score=1.0, modal_given=True, segmentation=gt_visible[a["gt_id"]])
    m = run(tmp_path, ds, amodal, visible)
    assert m["protocol"]["modal_given"] is True
    assert m["protocol"]["amodal_ap"].startswith("withheld")
    assert any("visible mask" in g for g in m["protocol"]["given"])
    assert all(v is None for v in m["amodal"].values())
    assert m["visible"]["AP"] is not None and 0 < m["miou"]["amodal_full"] <= 1
    assert m["counts"]["amodal_equals_visible"] == len(amodal)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "**Amodal AP/AR withheld" in report and "| AP | — |" in report
    rows = list(csv.DictReader(open(tmp_path / "out" / "plots" / "pr_curves.csv")))
    assert {r["amodal_iou50"] for r in rows} == {""} and rows[0]["visible_iou50"] != ""
