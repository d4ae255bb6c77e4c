"""The evaluate stage from a parameter file: what `python -m stages.evaluate` runs."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.decoding.params import DEFAULT_AMODAL, DEFAULT_CACHE, DEFAULT_VISIBLE
from pipeline.params_file import DEFAULT_PARAMS, load_params, reading, section

REPORTS_DIR = Path("reports")


def run_stage(params_path: str | os.PathLike = DEFAULT_PARAMS) -> dict:
    """Read the `dataset` and `evaluate` sections, evaluate the prediction files into reports/;
    returns the metrics written to reports/metrics.json."""
    from pipeline.datasets.params import DatasetParams, load
    from pipeline.datasets.skips import read_skips
    from pipeline.evaluation import EvaluateParams, evaluate
    from pipeline.evaluation.run_info import describe_run

    params = load_params(params_path)
    with reading(params_path):
        dataset_params = DatasetParams.from_dict(section(params, "dataset", params_path))
        evaluate_params = EvaluateParams.from_dict(section(params, "evaluate", params_path))
        run = describe_run(params, DEFAULT_CACHE, params_path)
    dataset = load(dataset_params)
    return evaluate(dataset, DEFAULT_AMODAL, DEFAULT_VISIBLE, REPORTS_DIR, evaluate_params, run=run,
                    skips=read_skips(DEFAULT_AMODAL))
