"""`vlmsam evaluate`: the evaluator on the command line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer


def evaluate_command(
    gt: Path = typer.Option(..., "--gt", help="Ground-truth amodal annotation JSON (any supported flavour)."),
    amodal: Path = typer.Option(..., "--amodal", help="Amodal prediction file (COCO results with RLE masks)."),
    visible: Path = typer.Option(..., "--visible", help="Visible prediction file (COCO results with RLE masks)."),
    out: Path = typer.Option(..., "--out", help="Output folder for metrics.json, report.md and plots/."),
    flavour: Optional[str] = typer.Option(
        None, "--flavour", help="Dataset flavour (d2sa, cocoa, kins2020, kins_coco); detected when omitted."),
    max_images: Optional[int] = typer.Option(
        None, "--max-images", help="Evaluate only the first N images of the ground truth (as the run that made the predictions)."),
    occlusion_bins: int = typer.Option(
        10, "--occlusion-bins", min=1, help="Number of occlusion-rate bins of the mIoU-vs-occlusion plot."),
) -> None:
    """Mask AP/AR (COCOeval) and per-instance mIoU of amodal and visible predictions."""
    from pipeline.datasets import DatasetError, load_dataset
    from pipeline.datasets.skips import read_skips
    from pipeline.evaluation import EvaluateParams, evaluate
    from pipeline.predictions import PredictionFormatError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        params = EvaluateParams(occlusion_bins=occlusion_bins)
        dataset = load_dataset(gt, flavour=flavour, max_images=max_images)
        metrics = evaluate(dataset, amodal, visible, out, params, skips=read_skips(amodal))
    except (DatasetError, PredictionFormatError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=1) from e
    summary = ", ".join(
        f"{view} AP {_pct(metrics[view]['AP'])}" for view in ("amodal", "visible"))
    summary += f", mIoU amodal {_pct(metrics['miou']['amodal_full'])}"
    prefix = "SMOKE (random weights, not results): " if metrics["smoke"] else ""
    typer.echo(f"{prefix}{summary}; written to {out}")


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"
