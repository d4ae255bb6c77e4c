"""DVC stage `gallery`: the run's cache/ files -> reports/gallery/.

Run as `python -m stages.gallery [--params params.yaml] [--debug]`; reads the `dataset` and
`gallery` sections.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipeline.errors import run_entry
from pipeline.gallery.stage import run_stage
from pipeline.params_file import DEFAULT_PARAMS


def main(argv: list[str] | None = None) -> dict:
    """Run the stage; returns the gallery summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="parameter file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_stage(args.params)


if __name__ == "__main__":
    sys.exit(run_entry(main))
