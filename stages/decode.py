"""DVC stage `decode`: cache/points.parquet (+ cache/attention.h5 for the VLM's occluders) ->
cache/pred_visible.json + cache/pred_amodal.json.

Run as `python -m stages.decode [--params params.yaml]`; reads the `dataset`, `models` and
`decode` sections and the optional top-level `prompt_mode` shared with the sample stage.
Launched as several processes (torchrun, `accelerate launch`, srun, a SLURM array, or
`--num-shards/--shard-index`), each decodes its shard and the last to finish writes the files.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.datasets.params import DatasetParams, load
from pipeline.datasets.skips import read_skips
from pipeline.decoding.params import (
    DEFAULT_AMODAL,
    DEFAULT_CACHE,
    DEFAULT_POINTS,
    DEFAULT_VISIBLE,
    DecodeParams,
    sam_models_from_section,
)
from pipeline.decoding.run import DecodeSummary, run_decode
from pipeline.params_file import DEFAULT_PARAMS, load_params, section
from pipeline.scaling.process import add_shard_arguments, start_shard


def main(argv: list[str] | None = None) -> DecodeSummary:
    """Run the stage on the default paths; returns what it wrote."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="parameter file")
    add_shard_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    shard = start_shard(args.num_shards, args.shard_index)
    params = load_params(args.params)
    dataset_params = DatasetParams.from_dict(section(params, "dataset", args.params))
    dataset = load(dataset_params)
    profile, sam_params = sam_models_from_section(section(params, "models", args.params))
    decode_params = DecodeParams.from_dict(section(params, "decode", args.params), params.get("prompt_mode"))
    return run_decode(dataset, decode_params, profile, sam_params,
                      DEFAULT_POINTS, DEFAULT_CACHE, DEFAULT_VISIBLE, DEFAULT_AMODAL,
                      upstream_skips=read_skips(DEFAULT_POINTS), on_error=dataset_params.on_error,
                      max_skipped_fraction=dataset_params.max_skipped_fraction, shard=shard)


if __name__ == "__main__":
    main()
