"""`vlmsam extract`: the extract stage on the command line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer


def extract_command(
    params: Path = typer.Option(Path("params.yaml"), "--params", help="Parameter file (sections dataset, models, extract)."),
    out: Path = typer.Option(Path("cache/attention.h5"), "--out", help="Attention cache (HDF5) to write."),
    max_images: Optional[int] = typer.Option(
        None, "--max-images", min=1, help="Extract only the first N images (overrides dataset.max_images)."),
    profile: Optional[str] = typer.Option(
        None, "--profile", help="'smoke' (tiny random-weight VLM), 'real' or 'auto'; overrides models.profile."),
    no_prefix_reuse: bool = typer.Option(
        False, "--no-prefix-reuse", help="Run every prompt as a full forward (same maps, slower; for checks)."),
) -> None:
    """VLM occlusion reasoning and per-instance target attention maps -> attention cache."""
    from pipeline.attention.vlm import VlmNotAvailableError
    from pipeline.datasets import DatasetError
    from pipeline.attention.stage import run_stage

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        path = run_stage(params, out, reuse_prefix=not no_prefix_reuse, max_images=max_images, profile=profile)
    except (DatasetError, VlmNotAvailableError, FileNotFoundError, KeyError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=1) from e
    typer.echo(f"wrote {path}")
