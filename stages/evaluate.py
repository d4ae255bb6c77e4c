"""DVC stage `evaluate`: cache/pred_amodal.json + cache/pred_visible.json -> reports/.

Run as `python -m stages.evaluate [--params params.yaml]`; reads the `dataset` and
`evaluate` sections, and for metrics.json's "run" the attention cache's model and extract
settings and the `models`, `prompt_mode` and `decode` sections.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.datasets.params import DatasetParams, load
from pipeline.datasets.skips import read_skips
from pipeline.evaluation import EvaluateParams, evaluate
from pipeline.evaluation.run_info import describe_run
from pipeline.params_file import DEFAULT_PARAMS, load_params, section

PRED_AMODAL = Path("cache/pred_amodal.json")
PRED_VISIBLE = Path("cache/pred_visible.json")
ATTENTION_CACHE = Path("cache/attention.h5")
REPORTS_DIR = Path("reports")


def main(argv: list[str] | None = None) -> dict:
    """Run the stage; returns the metrics written to reports/metrics.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="parameter file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params(args.params)
    dataset_params = DatasetParams.from_dict(section(params, "dataset", args.params))
    evaluate_params = EvaluateParams.from_dict(section(params, "evaluate", args.params))
    run = describe_run(params, ATTENTION_CACHE, args.params)
    dataset = load(dataset_params)
    return evaluate(dataset, PRED_AMODAL, PRED_VISIBLE, REPORTS_DIR, evaluate_params, run=run,
                    skips=read_skips(PRED_AMODAL))


if __name__ == "__main__":
    main()
