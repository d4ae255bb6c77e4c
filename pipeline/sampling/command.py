"""`vlmsam sample`: the sample stage on the command line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer


def sample_command(
    params: Path = typer.Option(Path("params.yaml"), "--params", help="Parameter file (sections dataset, sample; top-level prompt_mode)."),
    cache: Path = typer.Option(Path("cache/attention.h5"), "--cache", help="Attention cache (HDF5) of the extract stage."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Dataset annotation JSON; overrides dataset.annotations."),
    out: Path = typer.Option(Path("cache/points.parquet"), "--out", help="Points file (Parquet) to write."),
    preview: int = typer.Option(0, "--preview", min=0, help="Also draw the first N instances (image, map, box, points) as PNGs."),
    preview_dir: Optional[Path] = typer.Option(None, "--preview-dir", help="Folder for the preview PNGs (needed with --preview)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    workers: str = typer.Option("auto", "--workers", help="Processes sharing the images, or 'auto': one per core, at most 8 and one per 32 images (the output does not depend on it)."),
) -> None:
    """Attention maps -> point prompts (positives, negatives) for EfficientSAM -> Parquet."""
    from pipeline.attention.cache import CacheFormatError
    from pipeline.datasets import DatasetError
    from pipeline.sampling.run import parse_workers
    from pipeline.sampling.stage import run_stage

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = run_stage(params, cache, out, dataset, preview, preview_dir, progress, parse_workers(workers))
    except (CacheFormatError, DatasetError, FileNotFoundError, KeyError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=1) from e
    smoke = " (SMOKE: random-weight attention, not a result)" if summary.smoke else ""
    typer.echo(f"wrote {out}: {summary.points} points for {summary.instances} instances{smoke}")
