"""The gallery stage from a parameter file: what `python -m stages.gallery` runs."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.params_file import DEFAULT_PARAMS, load_params, reading, section

GALLERY_DIR = Path("reports/gallery")
METRICS = Path("reports/metrics.json")  # the evaluate stage's, for the page's header


def run_stage(params_path: str | os.PathLike = DEFAULT_PARAMS) -> dict:
    """Read the `dataset` and `gallery` sections and write reports/gallery/ from the run's
    cache/ files and reports/metrics.json; returns `build_gallery`'s summary. Under
    dataset.proposals (and `evaluate.proposal_score`) the cards are the proposals matched to
    ground truth, paired as evaluate pairs them."""
    import json

    from pipeline.finished_run import load_shown_dataset
    from pipeline.gallery.build import build_gallery
    from pipeline.gallery.params import GalleryParams
    from pipeline.visualize import RunOutputs

    params = load_params(params_path)
    with reading(params_path):
        gallery_params = GalleryParams.from_dict(section(params, "gallery", params_path))
    metrics = json.loads(METRICS.read_text(encoding="utf-8")) if METRICS.exists() else None
    outputs = RunOutputs()
    return build_gallery(load_shown_dataset(params_path, outputs), outputs, GALLERY_DIR, gallery_params, metrics)
