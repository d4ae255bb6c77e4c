"""`vlmsam export`: a finished run for another viewer."""

from __future__ import annotations

import enum
import logging
from pathlib import Path

import typer

from pipeline.decoding.params import DEFAULT_AMODAL, DEFAULT_CACHE, DEFAULT_POINTS, DEFAULT_VISIBLE


class ExportFormat(str, enum.Enum):
    """The formats `vlmsam export --to` writes."""

    fiftyone = "fiftyone"


def export_command(
    out: Path = typer.Argument(..., help="Folder to write (new, empty, or an earlier export, which is replaced)."),
    to: ExportFormat = typer.Option(..., "--to", help="Format: fiftyone (a FiftyOneDataset folder)."),
    params: Path = typer.Option(Path("params.yaml"), "--params", help="Parameter file (its dataset section; under dataset.proposals also evaluate.proposal_score)."),
    cache: Path = typer.Option(DEFAULT_CACHE, "--cache", help="Attention cache written by extract."),
    points: Path = typer.Option(DEFAULT_POINTS, "--points", help="Points file written by sample."),
    visible: Path = typer.Option(DEFAULT_VISIBLE, "--visible", help="Visible predictions written by decode."),
    amodal: Path = typer.Option(DEFAULT_AMODAL, "--amodal", help="Amodal predictions written by decode."),
    copy_images: bool = typer.Option(
        True, "--copy-images/--link-images",
        help="Copy the images into the export (default), or refer to them by absolute path."),
) -> None:
    """Export a finished run's ground truth, predictions, points and attention (FiftyOne:
    open with fo.Dataset.from_dir(OUT, dataset_type=fo.types.FiftyOneDataset))."""
    from pipeline.attention.cache import CacheFormatError
    from pipeline.datasets.record import DatasetError
    from pipeline.export.fiftyone import ExportError, export_fiftyone
    from pipeline.finished_run import load_shown_dataset
    from pipeline.predictions import PredictionFormatError
    from pipeline.visualize import RunOutputs

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        outputs = RunOutputs(cache, points, visible, amodal)
        outputs.check()  # before loading the dataset: a missing output is the likelier mistake
        dataset = load_shown_dataset(params, outputs)
        summary = export_fiftyone(dataset, outputs, out, copy_images=copy_images)
    except (FileNotFoundError, DatasetError, CacheFormatError, PredictionFormatError, ExportError,
            KeyError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=1) from e
    prefix = "SMOKE (random weights, not results): " if summary["smoke"] else ""
    typer.echo(f"{prefix}{summary['samples']} images, {summary['instances']} instances, "
               f"{summary['predictions']} predictions written to {out} "
               f"(fo.Dataset.from_dir('{out}', dataset_type=fo.types.FiftyOneDataset))")
