"""The sample stage from a parameter file: what `python -m stages.sample` and `vlmsam sample` run."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

from pipeline.params_file import DEFAULT_PARAMS, load_params, reading, section

ATTENTION_CACHE = Path("cache/attention.h5")
POINTS = Path("cache/points.parquet")

log = logging.getLogger("vlmsam.sample")


def read_stage_params(params_path: str | os.PathLike = DEFAULT_PARAMS):
    """(DatasetParams, SampleParams) from the parameter file."""
    from pipeline.datasets.params import DatasetParams
    from pipeline.sampling.params import SampleParams

    params = load_params(params_path)
    with reading(params_path):
        dataset = DatasetParams.from_dict(section(params, "dataset", params_path))
        sample = SampleParams.from_dict(section(params, "sample", params_path), params.get("prompt_mode"))
    return dataset, sample


def run_stage(
    params_path: str | os.PathLike = DEFAULT_PARAMS, cache: str | os.PathLike = ATTENTION_CACHE,
    out: str | os.PathLike = POINTS, annotations: str | os.PathLike | None = None,
    preview: int = 0, preview_dir: str | os.PathLike | None = None, progress: bool = True,
    workers: int | str = "auto",
):
    """Sample the points of every dataset instance into `out`; `annotations` overrides
    dataset.annotations; `preview` > 0 also writes that many PNGs into `preview_dir`;
    `workers` processes share the images (same output; "auto": see `run.resolve_workers`)."""
    from pipeline.datasets.params import load
    from pipeline.datasets.skips import read_skips, without_skipped_images, write_skips
    from pipeline.errors import ParamsError
    from pipeline.sampling.points_schema import read_points
    from pipeline.sampling.preview import write_previews
    from pipeline.sampling.run import run_sample

    if preview and preview_dir is None:
        raise ParamsError("a preview needs a folder for its PNGs (--preview-dir)")
    dataset_params, sample_params = read_stage_params(params_path)
    if annotations is not None:
        dataset_params = replace(dataset_params, annotations=str(annotations))
    dataset = load(dataset_params)
    skips = read_skips(cache)  # images extract left out have no maps: they get no points
    if skips is None:
        skips = list(dataset.skips)
    dataset = without_skipped_images(dataset, skips)
    summary = run_sample(cache, dataset, out, sample_params, progress=progress, workers=workers)
    write_skips(out, skips)
    if preview:
        table, meta = read_points(out)
        paths = write_previews(cache, dataset, table, sample_params, preview, preview_dir, meta["smoke"])
        log.info("wrote %d preview PNG(s) to %s", len(paths), preview_dir)
    return summary
