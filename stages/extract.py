"""DVC stage `extract`: dataset images → VLM occlusion answers and target attention maps →
cache/attention.h5.

Run as `python -m stages.extract [--params params.yaml] [--out cache/attention.h5] [--debug]`;
reads the `dataset`, `models` (profile + vlm) and `extract` sections. Resumable: re-running
after an interruption skips the images already extracted. Launched as several processes
(torchrun, `accelerate launch`, srun, a SLURM array, or `--num-shards/--shard-index`), each
extracts its shard and the last to finish writes the cache.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipeline.attention.stage import ATTENTION_CACHE, run_stage
from pipeline.errors import run_entry
from pipeline.params_file import DEFAULT_PARAMS
from pipeline.scaling.process import add_shard_arguments


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="parameter file")
    parser.add_argument("--out", type=Path, default=ATTENTION_CACHE, help="attention cache to write")
    parser.add_argument("--no-prefix-reuse", action="store_true",
                        help="run every prompt as a full forward (same maps, slower; for checks)")
    add_shard_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_stage(args.params, args.out, reuse_prefix=not args.no_prefix_reuse,
                     num_shards=args.num_shards, shard_index=args.shard_index)


if __name__ == "__main__":
    sys.exit(run_entry(main))
