"""DVC stage `sample`: attention cache + dataset boxes -> point prompts -> cache/points.parquet.

Run as `python -m stages.sample [--params params.yaml] [--cache ...] [--out ...] [--debug]`;
reads the `dataset` and `sample` sections and the optional top-level `prompt_mode` (shared with
decode). Never loads the VLM: re-running with new sample parameters takes under a minute at D2SA
size (`benchmarks/bench_sample.py`), in one process per core (`--workers auto`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipeline.errors import run_entry
from pipeline.params_file import DEFAULT_PARAMS
from pipeline.sampling.stage import ATTENTION_CACHE, POINTS, run_stage


def _workers(text: str):
    from pipeline.sampling.run import parse_workers

    try:
        return parse_workers(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="parameter file")
    parser.add_argument("--cache", type=Path, default=ATTENTION_CACHE, help="attention cache to read")
    parser.add_argument("--out", type=Path, default=POINTS, help="points file (Parquet) to write")
    parser.add_argument("--workers", type=_workers, default="auto",
                        help="processes sharing the images, or 'auto': one per core, at most 8 and one per "
                             "32 images (the output does not depend on it)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_stage(args.params, args.cache, args.out, workers=args.workers)


if __name__ == "__main__":
    sys.exit(run_entry(main))
