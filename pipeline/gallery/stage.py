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

    from pipeline.datasets.params import DatasetParams, load
    from pipeline.evaluation.params import EvaluateParams
    from pipeline.evaluation.proposals import paired_from_file
    from pipeline.gallery.build import build_gallery
    from pipeline.gallery.params import GalleryParams
    from pipeline.visualize import RunOutputs

    params = load_params(params_path)
    with reading(params_path):
        dataset_params = DatasetParams.from_dict(section(params, "dataset", params_path))
        gallery_params = GalleryParams.from_dict(section(params, "gallery", params_path))
        proposal_score = (EvaluateParams.from_dict(section(params, "evaluate", params_path)).proposal_score
                          if dataset_params.proposals is not None else None)
    metrics = json.loads(METRICS.read_text(encoding="utf-8")) if METRICS.exists() else None
    dataset, outputs = load(dataset_params), RunOutputs()
    if dataset.proposals is not None:
        dataset = paired_from_file(dataset, outputs.amodal, proposal_score)
    return build_gallery(dataset, outputs, GALLERY_DIR, gallery_params, metrics)
