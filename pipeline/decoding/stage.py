"""The decode stage from a parameter file: what `python -m stages.decode` runs."""

from __future__ import annotations

import os

from pipeline.decoding.run import DecodeSummary
from pipeline.params_file import DEFAULT_PARAMS, load_params, reading, section


def run_stage(params_path: str | os.PathLike = DEFAULT_PARAMS, num_shards: int | None = None,
              shard_index: int | None = None) -> DecodeSummary:
    """Read the `dataset`, `models`, `decode` sections and the top-level prompt_mode; decode the
    points file into the prediction files (the default paths of pipeline.decoding.params). The
    process takes its shard of the images from `num_shards`/`shard_index` or its launcher."""
    from pipeline.datasets.params import DatasetParams, load
    from pipeline.datasets.skips import read_skips
    from pipeline.decoding.params import (
        DEFAULT_AMODAL,
        DEFAULT_CACHE,
        DEFAULT_POINTS,
        DEFAULT_VISIBLE,
        DecodeParams,
        sam_models_from_section,
        segmenter_from_section,
    )
    from pipeline.decoding.run import run_decode
    from pipeline.profiles import with_resolved_profile
    from pipeline.scaling.process import start_shard

    shard = start_shard(num_shards, shard_index)
    params = load_params(params_path)
    with reading(params_path):
        dataset_params = DatasetParams.from_dict(section(params, "dataset", params_path))
        decode_params = DecodeParams.from_dict(section(params, "decode", params_path), params.get("prompt_mode"))
        sam_models_from_section({**section(params, "models", params_path), "profile": "real"})  # values checked first
        models = with_resolved_profile(section(params, "models", params_path), dataset_params.annotations,
                                       str(params_path))
        profile, sam_params = sam_models_from_section(models)
        segmenter = segmenter_from_section(models)
        if dataset_params.proposals is not None:
            decode_params.check_without_ground_truth("dataset.proposals")
    dataset = load(dataset_params)
    return run_decode(dataset, decode_params, profile, sam_params,
                      DEFAULT_POINTS, DEFAULT_CACHE, DEFAULT_VISIBLE, DEFAULT_AMODAL, segmenter=segmenter,
                      upstream_skips=read_skips(DEFAULT_POINTS), on_error=dataset_params.on_error,
                      max_skipped_fraction=dataset_params.max_skipped_fraction, shard=shard)
