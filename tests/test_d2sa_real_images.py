"""The five real D2SA amodal images (1920x1440, 1920x1511, 1920x1440, 1920x1452, 2054x2028;
zero-padded at the bottom, the top, or around, where an amodal mask leaves the camera frame)
through a smoke run of every stage and the figure, with D2SA-format annotations written for
them: nothing assumes 1920x1440 or content at the top-left of the canvas."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import masks
from pipeline.datasets import load_dataset

REAL = Path(__file__).resolve().parents[2] / "shared/reference/amodal_real_data/D2SA"
pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason="needs ../shared/reference/amodal_real_data")

# image -> (size W x H, camera frame x0, y0, x1, y1 inside the canvas), measured on the files:
# the rows / columns outside the frame are black (mean grey < 8)
FRAMES = {
    "D2S_004811": ((1920, 1440), (0, 0, 1920, 1440)),
    "D2S_026022": ((1920, 1511), (0, 0, 1920, 1440)),     # padded at the bottom
    "D2S_038111": ((1920, 1440), (0, 0, 1920, 1440)),
    "D2S_058302": ((1920, 1452), (0, 12, 1920, 1452)),    # padded at the top
    "D2S_068312": ((2054, 2028), (134, 398, 2054, 1838)),  # padded left, top and bottom
}


def _rect(h: int, w: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[max(y0, 0):y1, max(x0, 0):x1] = True
    return m


def d2sa_annotations(path: Path) -> Path:
    """D2SA-format annotations for the real images: per image, a product partly covered by a
    second one in front, and (on padded canvases) a product that leaves the camera frame: its
    amodal mask runs into the black strip, its visible mask stops at the frame."""
    categories = json.loads((REAL / "categories_from_aistron.json").read_text())[:3]
    images, annotations = [], []
    for iid, (name, ((w, h), (fx0, fy0, fx1, fy1))) in enumerate(FRAMES.items(), start=1):
        with Image.open(REAL / "images_sln_amodal" / f"{name}.jpg") as im:
            assert im.size == (w, h)
        images.append({"id": iid, "file_name": f"{name}.jpg", "width": w, "height": h})
        cx, cy = (fx0 + fx1) // 2, (fy0 + fy1) // 2
        back = _rect(h, w, cx - 300, cy - 200, cx + 100, cy + 150)
        front = _rect(h, w, cx - 50, cy - 100, cx + 250, cy + 250)
        objects = [(back, back & ~front, [iid * 10 + 2]), (front, front, [])]
        if (w, h) != (1920, 1440):  # a product half outside the frame, into the padding
            edge_y = fy1 if fy1 < h else fy0
            amodal = _rect(h, w, fx0 + 200, edge_y - 120, fx0 + 500, edge_y + 120)
            objects.append((amodal, amodal & _rect(h, w, fx0, fy0, fx1, fy1), []))
        for k, (amodal, visible, occluders) in enumerate(objects, start=1):
            ys, xs = np.nonzero(amodal)
            annotations.append({
                "id": iid * 10 + k, "image_id": iid, "category_id": categories[k - 1]["id"], "iscrowd": 0,
                "segmentation": masks.encode(amodal), "visible_mask": masks.encode(visible),
                "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
                "area": int(amodal.sum()), "occluder_ids": occluders,
            })
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def test_frames_match_the_files():
    for name, ((w, h), (x0, y0, x1, y1)) in FRAMES.items():
        grey = np.asarray(Image.open(REAL / "images_sln_amodal" / f"{name}.jpg").convert("L"), float)
        rows, cols = np.flatnonzero(grey.mean(1) >= 8), np.flatnonzero(grey.mean(0) >= 8)
        assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (x0, y0, x1, y1), name


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from pipeline.demo import working_dir
    from pipeline.profiles import SMOKE_OVERRIDES, apply_overrides, default_params, write_params
    from stages import decode, evaluate, extract, sample

    root = tmp_path_factory.mktemp("d2sa_real")
    ann = d2sa_annotations(root / "D2S_amodal_real_images.json")
    params = apply_overrides(default_params(), {
        **SMOKE_OVERRIDES, "extract.max_new_tokens": 4, "dataset.annotations": str(ann),
        "dataset.images": str(REAL / "images_sln_amodal"), "dataset.flavour": "d2sa"})
    write_params(root / "params.yaml", params)
    with working_dir(root):
        for stage in (extract, sample, decode, evaluate):
            stage.main(["--params", "params.yaml"])
    return root, load_dataset(ann, image_dir=REAL / "images_sln_amodal", check_images=True)


def test_every_stage_runs_at_the_real_sizes(run):
    from pipeline.attention.cache import iter_images
    from pipeline.predictions import read_predictions

    root, ds = run
    sizes = {im.id: (im.width, im.height) for im in ds.images}
    cached = list(iter_images(root / "cache/attention.h5"))
    assert sorted(c.image_id for c in cached) == sorted(sizes)
    for c in cached:
        w, h = sizes[c.image_id]
        assert (c.width, c.height) == (w, h)
        rect = c.placement.rect  # the image tokens tile the whole canvas, padding included
        assert rect[:, 0].min() == pytest.approx(0, abs=1) and rect[:, 1].min() == pytest.approx(0, abs=1)
        assert rect[:, 2].max() == pytest.approx(w, abs=1) and rect[:, 3].max() == pytest.approx(h, abs=1)
    for name in ("pred_visible.json", "pred_amodal.json"):
        entries = read_predictions(root / "cache" / name)
        assert len(entries) == ds.instance_count()
        for e in entries:
            w, h = sizes[e["image_id"]]
            assert e["segmentation"]["size"] == [h, w] and e["smoke"] is True
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert metrics["n_gt"] == metrics["n_pred"] == ds.instance_count() and metrics["smoke"] is True
    assert metrics["skipped"]["images"] == 0


def test_the_figure_draws_padded_images(run, tmp_path):
    from pipeline.visualize import RunOutputs, visualize_run

    root, ds = run
    d = RunOutputs()
    outputs = RunOutputs(root / d.cache, root / d.points, root / d.visible, root / d.amodal)
    paths = visualize_run(ds, outputs, ds.instance_count(), tmp_path / "figs")
    assert len(paths) == ds.instance_count()
    drawn = {int(p.stem.split("_")[1].removeprefix("image")) for p in paths}
    assert drawn == {im.id for im in ds.images}
    for path in paths:
        with Image.open(path) as fig:
            assert fig.format == "PNG" and fig.size[0] > 800
