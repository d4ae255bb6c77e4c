"""The sample stage end to end on a synthetic D2SA-format dataset: params.yaml, `python -m
stages.sample`, `vlmsam sample` with previews, and no VLM import."""

import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.datasets import load_dataset
from pipeline.sampling import synthetic
from pipeline.sampling.points_schema import read_points
from pipeline.synth import generate
from stages import sample as stage


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A synthetic D2SA-format dataset, a cache from its ground truth, and a params.yaml."""
    root = tmp_path_factory.mktemp("project")
    annotations = generate(root / "synth", n_images=5, seed=3, width=320, height=240, progress=False)
    dataset = load_dataset(annotations)
    cache, scenes = synthetic.cache_for_dataset(root / "attention.h5", dataset, seed=4)
    params = {
        "dataset": {"flavour": "d2sa", "annotations": str(annotations), "images": None, "max_images": None},
        "prompt_mode": "points+box",
        "sample": {"n_pos": 2, "n_neg": 2, "box_enlarge": 1.2},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root, cache, dataset, scenes


def test_stage_module_reads_params_yaml(project, tmp_path):
    root, cache, dataset, scenes = project
    out = tmp_path / "points.parquet"
    summary = stage.main(["--params", str(root / "params.yaml"), "--cache", str(cache), "--out", str(out)])
    table, meta = read_points(out)
    assert summary.instances == dataset.instance_count() == len(set(zip(
        table.column("image_id").to_pylist(), table.column("gt_id").to_pylist())))
    assert meta["params"]["prompt_mode"] == "points+box" and meta["params"]["box_enlarge"] == 1.2
    assert meta["smoke"] is True
    # the points of this real loader's records land on the visible masks
    d = table.to_pydict()
    pos = [scenes[i].visible[g][int(y), int(x)] for i, g, x, y, lab in
           zip(d["image_id"], d["gt_id"], d["x"], d["y"], d["label"]) if lab == 1]
    assert np.mean(pos) >= 0.85


def test_cli_writes_points_and_previews(project, tmp_path):
    root, cache, dataset, _ = project
    out, previews = tmp_path / "p.parquet", tmp_path / "previews"
    result = CliRunner().invoke(app, [
        "sample", "--params", str(root / "params.yaml"), "--cache", str(cache), "--out", str(out),
        "--preview", "3", "--preview-dir", str(previews), "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    assert "SMOKE" in result.output
    pngs = sorted(previews.glob("*.png"))
    assert len(pngs) == 3
    with Image.open(pngs[0]) as im:
        assert im.format == "PNG" and im.size[0] > 100


def test_cli_errors_are_clear(project, tmp_path):
    root, cache, _, _ = project
    result = CliRunner().invoke(app, ["sample", "--params", str(root / "params.yaml"),
                                      "--cache", str(tmp_path / "none.h5"), "--out", str(tmp_path / "p.parquet")])
    assert result.exit_code == 1 and "attention cache not found" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"dataset": {"annotations": "x.json"}, "sample": {"n_pos": 5, "n_neg": 2}}))
    result = CliRunner().invoke(app, ["sample", "--params", str(bad), "--cache", str(cache)])
    assert result.exit_code == 1 and "exceeds the 6 points" in result.output
    result = CliRunner().invoke(app, ["sample", "--params", str(root / "params.yaml"), "--cache", str(cache),
                                      "--out", str(tmp_path / "p.parquet"), "--preview", "2"])
    assert result.exit_code == 1 and "--preview-dir" in result.output


def test_the_stage_never_imports_the_vlm():
    code = ("import sys, stages.sample, pipeline.sampling.run, pipeline.sampling.preview; "
            "bad = [m for m in ('transformers', 'torch') if m in sys.modules]; print(bad); assert not bad")
    subprocess.run([sys.executable, "-c", code], check=True)
