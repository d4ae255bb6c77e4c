"""DVC stage `proposals`: fingerprint of the `dataset.proposals` file -> cache/proposals.json.

Run as `python -m stages.proposals [--params params.yaml] [--debug]`; reads `dataset.proposals`.
DVC cannot name a dependency that may be null, so this stage is always run (`always_changed`)
and writes {"path", "sha256"} of the file ({"path": null} without proposals); the stages that
read proposals depend on its output, and re-run only when the fingerprint changes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipeline.errors import run_entry
from pipeline.params_file import DEFAULT_PARAMS


def main(argv: list[str] | None = None) -> dict:
    """Write the fingerprint; returns it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="parameter file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from pipeline.atomic import write_json
    from pipeline.datasets.params import DatasetParams
    from pipeline.datasets.proposals import FINGERPRINT, file_identity
    from pipeline.params_file import load_params, reading, section

    params = load_params(args.params)
    with reading(args.params):
        dataset = DatasetParams.from_dict(section(params, "dataset", args.params))
    fingerprint = file_identity(dataset.proposals)
    write_json(FINGERPRINT, fingerprint)
    return fingerprint


if __name__ == "__main__":
    sys.exit(run_entry(main))
