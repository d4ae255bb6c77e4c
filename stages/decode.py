"""DVC stage `decode`: cache/points.parquet (+ cache/attention.h5 for the VLM's occluders) ->
cache/pred_visible.json + cache/pred_amodal.json.

Run as `python -m stages.decode [--params params.yaml] [--debug]`; reads the `dataset`, `models`
and `decode` sections and the optional top-level `prompt_mode` shared with the sample stage.
Launched as several processes, each decodes its shard and the last to finish writes the files.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipeline.decoding.run import DecodeSummary
from pipeline.decoding.stage import run_stage
from pipeline.errors import run_entry
from pipeline.params_file import DEFAULT_PARAMS
from pipeline.scaling.process import add_shard_arguments


def main(argv: list[str] | None = None) -> DecodeSummary:
    """Run the stage on the default paths; returns what it wrote."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="parameter file")
    add_shard_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_stage(args.params, args.num_shards, args.shard_index)


if __name__ == "__main__":
    sys.exit(run_entry(main))
