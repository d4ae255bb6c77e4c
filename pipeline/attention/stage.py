"""The extract stage from a parameter file: what `python -m stages.extract` and `vlmsam extract` run."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.params_file import DEFAULT_PARAMS, load_params, reading, section

ATTENTION_CACHE = Path("cache/attention.h5")


def run_stage(params_path: str | os.PathLike = DEFAULT_PARAMS, out: str | os.PathLike = ATTENTION_CACHE,
              reuse_prefix: bool = True, max_images: int | None = None, profile: str | None = None,
              progress: bool = True, num_shards: int | None = None, shard_index: int | None = None) -> Path:
    """Read the parameter file, load dataset and VLM, extract into `out`.

    `max_images` / `profile` override dataset.max_images / models.profile when given. The
    process takes its shard of the images from `num_shards`/`shard_index` or its launcher
    (`pipeline/scaling/shards.py`).
    """
    from dataclasses import replace

    from pipeline.scaling.process import start_shard

    from pipeline.attention.extract import run_extract
    from pipeline.attention.params import ExtractParams, VlmModelParams
    from pipeline.attention.vlm import load_vlm
    from pipeline.datasets.params import DatasetParams, load
    from pipeline.profiles import with_resolved_profile

    shard = start_shard(num_shards, shard_index)
    params = load_params(params_path)
    with reading(params_path):
        dataset_params = DatasetParams.from_dict(section(params, "dataset", params_path))
        extract_params = ExtractParams.from_dict(section(params, "extract", params_path))
        models = dict(section(params, "models", params_path))
        if profile is not None:
            models["profile"] = profile
        VlmModelParams.from_models_section({**models, "profile": "real"})  # values checked before the weights
        models = with_resolved_profile(models, dataset_params.annotations, str(params_path))
        vlm_params = VlmModelParams.from_models_section(models)
    if max_images is not None:
        dataset_params = replace(dataset_params, max_images=max_images)
    dataset = load(dataset_params)
    vlm = load_vlm(vlm_params)
    return run_extract(vlm, dataset, extract_params, out, reuse_prefix=reuse_prefix, progress=progress,
                       on_error=dataset_params.on_error, max_skipped_fraction=dataset_params.max_skipped_fraction,
                       shard=shard)
