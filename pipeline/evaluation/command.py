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
        None, "--flavour", help="Dataset flavour (d2sa, cocoa, cocoa_original, kins2020, kins_coco); detected when omitted."),
    max_images: Optional[int] = typer.Option(
        None, "--max-images", help="Evaluate only the first N images of the ground truth (as the run that made the predictions)."),
    occlusion_bins: int = typer.Option(
        10, "--occlusion-bins", min=1, help="Number of occlusion-rate bins of the mIoU-vs-occlusion plot."),
    params_file: Optional[Path] = typer.Option(
        None, "--params", help="Parameter file of the run (models, prompt_mode, decode) for metrics.json's \"run\"; "
                               "needs --cache."),
    cache: Optional[Path] = typer.Option(
        None, "--cache", help="Attention cache of the run (VLM, layers, extract settings) for metrics.json's \"run\"."),
) -> None:
    """Mask AP/AR (COCOeval) and per-instance mIoU of amodal and visible predictions (figures
    are fractions in [0, 1])."""
    from pipeline.datasets import DatasetError, load_dataset
    from pipeline.attention.cache import CacheFormatError
    from pipeline.datasets.skips import read_skips
    from pipeline.evaluation import EvaluateParams, evaluate
    from pipeline.evaluation.run_info import describe_run, undescribed_run
    from pipeline.evaluation.units import UNIT, format_figure
    from pipeline.params_file import load_params
    from pipeline.predictions import PredictionFormatError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        params = EvaluateParams(occlusion_bins=occlusion_bins)
        if (params_file is None) != (cache is None):
            raise typer.BadParameter("--params and --cache describe the run together: give both or neither")
        if params_file is None:
            run = undescribed_run("vlmsam evaluate was called without --params and --cache")
        else:
            run = describe_run(load_params(params_file), cache, params_file)
        dataset = load_dataset(gt, flavour=flavour, max_images=max_images)
        metrics = evaluate(dataset, amodal, visible, out, params, run=run, skips=read_skips(amodal))
    except (DatasetError, PredictionFormatError, CacheFormatError, FileNotFoundError, KeyError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=1) from e
    withheld = metrics["protocol"]["amodal_ap"] != "reported"
    summary = ", ".join(
        f"{view} AP {'withheld (tied scores)' if view == 'amodal' and withheld else format_figure(metrics[view]['AP'], 'n/a')}"
        for view in ("amodal", "visible"))
    summary += f", mIoU amodal {format_figure(metrics['miou']['amodal_full'], 'n/a')} (unit: {UNIT} 0-1)"
    prefix = "SMOKE (random weights, not results): " if metrics["smoke"] else ""
    typer.echo(f"{prefix}{summary}; written to {out}")
