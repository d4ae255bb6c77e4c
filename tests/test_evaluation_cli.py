"""`vlmsam evaluate` and `python -m stages.evaluate` on synthetic D2SA-format scenes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.datasets import load_dataset
from pipeline.masks import decode, encode
from pipeline.predictions import write_predictions
from pipeline.synth import ANNOTATION_NAME, synth_coco
from test_decode import occlusion_cache


@pytest.fixture(scope="module")
def synth_gt(tmp_path_factory) -> Path:
    """Six synthetic 160x120 scenes (annotations only: the evaluator never opens images)."""
    data, _ = synth_coco(6, seed=3, width=160, height=120)
    path = tmp_path_factory.mktemp("synth") / ANNOTATION_NAME
    path.write_text(json.dumps(data))
    return path


def write_shifted_predictions(gt: Path, folder: Path, shift: int, smoke: bool,
                              max_images: int | None = None) -> tuple[Path, Path]:
    """GT masks moved `shift` px right, one amodal and one visible entry per instance."""
    ds = load_dataset(gt, max_images=max_images)
    amodal, visible = [], []
    for im in ds.images:
        for inst in im.instances:
            for entries, rle in ((amodal, inst.amodal_rle), (visible, inst.visible_rle)):
                entries.append({"image_id": im.id, "category_id": inst.category_id,
                                "segmentation": encode(np.roll(decode(rle), shift, axis=1)),
                                "score": 0.9, "gt_id": inst.id, "smoke": smoke})
    folder.mkdir(parents=True, exist_ok=True)
    write_predictions(folder / "pred_amodal.json", amodal)
    write_predictions(folder / "pred_visible.json", visible)
    return folder / "pred_amodal.json", folder / "pred_visible.json"


def test_cli_writes_metrics_and_report(synth_gt, tmp_path):
    amodal, visible = write_shifted_predictions(synth_gt, tmp_path, shift=0, smoke=True)
    result = CliRunner().invoke(app, ["evaluate", "--gt", str(synth_gt), "--amodal", str(amodal),
                                      "--visible", str(visible), "--out", str(tmp_path / "out"),
                                      "--flavour", "d2sa"])
    assert result.exit_code == 0, result.output
    assert "SMOKE" in result.output and "(unit: fraction 0-1)" in result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["amodal"]["AP"] == pytest.approx(1.0)
    assert metrics["miou"]["amodal_full"] == 1.0
    assert metrics["smoke"] is True
    assert metrics["run"]["source"].startswith("unknown: vlmsam evaluate was called without --params")
    assert metrics["n_gt"] == metrics["n_pred"] == len(json.loads(synth_gt.read_text())["annotations"])
    assert (tmp_path / "out" / "report.md").read_text().startswith("# Evaluation report\n\n> **SMOKE")


def test_cli_max_images_restricts_ground_truth(synth_gt, tmp_path):
    amodal, visible = write_shifted_predictions(synth_gt, tmp_path, shift=2, smoke=False, max_images=2)
    result = CliRunner().invoke(app, ["evaluate", "--gt", str(synth_gt), "--amodal", str(amodal),
                                      "--visible", str(visible), "--out", str(tmp_path / "out"),
                                      "--max-images", "2"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["n_gt"] == metrics["n_pred"]
    assert metrics["smoke"] is False
    assert 0 < metrics["miou"]["amodal_full"] < 1


def test_cli_reports_bad_predictions_with_exit_code_1(synth_gt, tmp_path):
    amodal, visible = write_shifted_predictions(synth_gt, tmp_path, shift=0, smoke=False)
    entries = json.loads(amodal.read_text())
    entries[4]["image_id"] = 4242
    amodal.write_text(json.dumps(entries))
    result = CliRunner().invoke(app, ["evaluate", "--gt", str(synth_gt), "--amodal", str(amodal),
                                      "--visible", str(visible), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "pred_amodal.json: entry 4" in result.output and "4242" in result.output
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_stage_reads_params_and_writes_reports(synth_gt, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_shifted_predictions(synth_gt, tmp_path / "cache", shift=1, smoke=False, max_images=4)
    occlusion_cache(Path("cache/attention.h5"), load_dataset(synth_gt, max_images=4))
    Path("params.yaml").write_text(yaml.safe_dump({
        "dataset": {"flavour": "d2sa", "annotations": str(synth_gt), "max_images": 4},
        "evaluate": {"occlusion_bins": 5},
        "models": {"profile": "smoke"},
        "decode": {"completion": "hull"},
    }))
    from stages.evaluate import main

    metrics = main(["--params", "params.yaml"])
    assert json.loads(Path("reports/metrics.json").read_text()) == metrics
    assert len(Path("reports/plots/miou_by_occlusion.csv").read_text().splitlines()) == 1 + 5
    assert Path("reports/report.md").exists()
    assert metrics["run"]["completion"] == "hull" and metrics["run"]["vlm"]["id"] == "smoke/llava_next"


def test_stage_rejects_unknown_evaluate_parameters(synth_gt, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(yaml.safe_dump({
        "dataset": {"annotations": str(synth_gt)}, "evaluate": {"bins": 5}}))
    from stages.evaluate import main

    with pytest.raises(ValueError, match=r"evaluate: unknown parameter\(s\) \['bins'\]"):
        main(["--params", "params.yaml"])
