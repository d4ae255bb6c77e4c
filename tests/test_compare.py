"""`vlmsam compare` on `dvc exp show --json`-shaped input."""

import pytest

from pipeline.compare import comparison_markdown, experiments_from_dvc_json


def _rev(name, mode, ap, smoke=False, metrics=True):
    data = {"params": {"params.yaml": {"data": {"prompt_mode": mode, "sample": {"n_pos": 2}}}}, "metrics": {}}
    if metrics:
        data["metrics"]["reports/metrics.json"] = {"data": {
            "amodal": {"AP": ap, "AP50": None}, "visible": {"AP": 0.5},
            "miou": {"amodal_full": 0.25, "amodal_occluded": None, "visible": 0.5}, "smoke": smoke}}
    return {"rev": "0123456789abcdef", "name": name, "data": data, "error": None}


def test_rows_and_table():
    entries = [
        {"rev": "workspace", "name": None, "data": None, "error": None, "experiments": None},
        {**_rev("main", "points", 0.1), "experiments": [{"revs": [_rev("pm-box", "box", 0.2, smoke=True)], "name": "pm-box"}]},
    ]
    rows = experiments_from_dvc_json(entries)
    assert [r["name"] for r in rows] == ["main", "pm-box"]
    md = comparison_markdown(rows)
    assert "SMOKE" in md and "sample.n_pos" not in md  # only differing params are columns
    assert "fractions in [0, 1]" in md
    assert "| pm-box | box | 0.200 | — | 0.500 | 0.250 | — | 0.500 | yes |" in md


def test_missing_metrics_is_a_clear_error():
    with pytest.raises(ValueError, match="pm-x: no reports/metrics.json"):
        experiments_from_dvc_json([{**_rev("pm-x", "box", 0.1, metrics=False), "experiments": None}])
