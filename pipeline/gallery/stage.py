"""The gallery stage from a parameter file: what `python -m stages.gallery` runs."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.params_file import DEFAULT_PARAMS, load_params, reading, section

GALLERY_DIR = Path("reports/gallery")
METRICS = Path("reports/metrics.json")  # the evaluate stage's, for the page's header


def run_stage(params_path: str | os.PathLike = DEFAULT_PARAMS) -> dict:
    """Read the `dataset` and `gallery` sections and write reports/gallery/ from the run's
    cache/ files and reports/metrics.json; returns `build_gallery`'s summary."""
    import json

    from pipeline.datasets.params import DatasetParams, load
    from pipeline.gallery.build import build_gallery
    from pipeline.gallery.params import GalleryParams
    from pipeline.visualize import RunOutputs

    params = load_params(params_path)
    with reading(params_path):
        dataset_params = DatasetParams.from_dict(section(params, "dataset", params_path))
        gallery_params = GalleryParams.from_dict(section(params, "gallery", params_path))
    metrics = json.loads(METRICS.read_text(encoding="utf-8")) if METRICS.exists() else None
    return build_gallery(load(dataset_params), RunOutputs(), GALLERY_DIR, gallery_params, metrics)
