"""`dvc repro` with `dataset.proposals` in a fresh-clone copy of the project (the embedded sample,
smoke profile): one prediction per valid proposal, the bad ones skipped and counted, the
protocol naming the file, AP equal to COCOeval run directly on the files; a changed proposals
file makes extract and everything after it out of date."""

from __future__ import annotations

import json

import pytest
import yaml

from test_dvc_pipeline import BIN, _ran_stages, _run, fresh_clone
from test_proposals import BAD, MIN_SCORE, SAMPLE, _cocoeval_stats, write_sample_proposals

from pipeline.evaluation.ap import AP_KEYS


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return fresh_clone(tmp_path_factory.mktemp("clone_proposals") / "vlmsam")


def test_repro_with_proposals(project):
    detections = project / "detections" / "sample_detections.json"
    detections.parent.mkdir()
    made = write_sample_proposals(detections)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["dataset"].update(proposals="detections/sample_detections.json", proposal_min_score=MIN_SCORE)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    out = _run([str(BIN / "dvc"), "repro"], project)
    assert _ran_stages(out) == ["proposals", "extract", "sample", "decode", "evaluate", "gallery"]
    amodal = json.loads((project / "cache" / "pred_amodal.json").read_text())
    visible = json.loads((project / "cache" / "pred_visible.json").read_text())
    assert len(amodal) == len(visible) == len(made["valid"])
    assert sorted((e["image_id"], e["category_id"], e["detector_score"]) for e in amodal) == sorted(
        (e["image_id"], e["category_id"], e["score"]) for e in made["valid"])

    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    p = metrics["protocol"]["proposals"]
    assert p["path"] == "detections/sample_detections.json" and len(p["sha256"]) == 64
    assert (p["count"], p["kept"], p["below_min_score"]) == (len(made["entries"]), len(made["valid"]), 1)
    assert sum(p["skipped"].values()) == len(BAD)
    assert sum(metrics["skipped"]["reasons"].values()) == len(BAD) and metrics["skipped"]["instances"] == 0
    assert metrics["n_pred"] == len(made["valid"]) and metrics["n_gt"] == 17 and metrics["smoke"] is True
    matched = metrics["proposal_matches"]["matched"]
    assert 0 <= matched <= 17  # the gallery's cards: proposals matched to ground truth (smoke: maybe none)
    assert len((project / "reports" / "gallery" / "gallery.csv").read_text().splitlines()) == matched + 1
    report = (project / "reports" / "report.md").read_text()
    assert "detections/sample_detections.json" in report and p["sha256"] in report

    want = _cocoeval_stats(SAMPLE, amodal, lambda e: e["detector_score"] * e["score"], project)
    for key, value in zip(AP_KEYS, want):
        got = metrics["amodal"][key]
        assert (got is None and value < 0) or got == pytest.approx(value, abs=1e-12), key

    assert set(json.loads(_run([str(BIN / "dvc"), "status", "--json"], project))) == {"proposals"}
    entries = json.loads(detections.read_text())
    detections.write_text(json.dumps(entries[1:]))  # the detector re-run: another file at the same path
    _run([str(BIN / "dvc"), "repro", "proposals"], project)
    status = json.loads(_run([str(BIN / "dvc"), "status", "--json"], project))
    assert {"extract", "sample", "decode", "evaluate", "gallery"} <= set(status)
