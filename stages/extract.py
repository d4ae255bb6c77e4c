"""DVC stage `extract`: dataset images → VLM occlusion answers and target attention maps →
cache/attention.h5.

Run as `python -m stages.extract [--params params.yaml] [--out cache/attention.h5]`; reads
the `dataset`, `models` (profile + vlm) and `extract` sections. Resumable: re-running after
an interruption skips the images already extracted. Launched as several processes
(torchrun, `accelerate launch`, srun, a SLURM array, or `--num-shards/--shard-index`), each
extracts its shard and the last to finish writes the cache.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from pipeline.params_file import DEFAULT_PARAMS, load_params, section
from pipeline.scaling.process import add_shard_arguments

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

    shard = start_shard(num_shards, shard_index)
    params = load_params(params_path)
    dataset_params = DatasetParams.from_dict(section(params, "dataset", params_path))
    models = dict(section(params, "models", params_path))
    if profile is not None:
        models["profile"] = profile
    vlm_params = VlmModelParams.from_models_section(models)
    extract_params = ExtractParams.from_dict(section(params, "extract", params_path))
    if max_images is not None:
        dataset_params = replace(dataset_params, max_images=max_images)
    dataset = load(dataset_params)
    vlm = load_vlm(vlm_params)
    return run_extract(vlm, dataset, extract_params, out, reuse_prefix=reuse_prefix, progress=progress,
                       on_error=dataset_params.on_error, max_skipped_fraction=dataset_params.max_skipped_fraction,
                       shard=shard)


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
    main()
