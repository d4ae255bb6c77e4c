"""`vlmsam predict` (one image through the whole pipeline) and `vlmsam visualize` (figures of a
finished run): both write the 8-panel pipeline figure. Heavy imports stay inside the commands."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional, Tuple

import typer

from pipeline.decoding.params import DEFAULT_AMODAL, DEFAULT_CACHE, DEFAULT_POINTS, DEFAULT_VISIBLE

SMOKE_SHOUT = "*** SMOKE RUN: random weights, these masks are NOT results ***"


def parse_other(text: str) -> tuple[tuple[float, float, float, float], str]:
    """A context object 'x1,y1,x2,y2,class name' -> (box, class name)."""
    parts = text.split(",", 4)
    if len(parts) != 5:
        raise typer.BadParameter(f"--other {text!r}: expected 'x1,y1,x2,y2,class name'")
    try:
        box = tuple(float(v) for v in parts[:4])
    except ValueError as e:
        raise typer.BadParameter(f"--other {text!r}: the box must be 4 numbers ({e})") from e
    return box, parts[4].strip()


def predict_overrides(profile: str | None) -> dict:
    """Parameter overrides of --profile: smoke = the smoke profile (tiny random models and
    layers inside their depth), real = models.profile real, None = the file as is."""
    from pipeline.profiles import SMOKE_OVERRIDES

    if profile is None:
        return {}
    if profile == "smoke":
        return dict(SMOKE_OVERRIDES)
    if profile == "real":
        return {"models.profile": "real"}
    raise typer.BadParameter(f"--profile must be 'smoke' or 'real', got {profile!r}")


def predict_command(
    image: Path = typer.Argument(..., help="Image file (any format PIL reads)."),
    box: Tuple[float, float, float, float] = typer.Option(
        ..., "--box", help="The object's (amodal) box: x1 y1 x2 y2 in pixels."),
    class_name: str = typer.Option(..., "--class", help="The object's class name, e.g. 'coffee mug'."),
    out: Path = typer.Option(Path("predict.png"), "--out", help="Figure file for the 8-panel pipeline figure: .png, .jpg or .jpeg."),
    others: Optional[List[str]] = typer.Option(
        None, "--other", help="A context object 'x1,y1,x2,y2,class name' (repeatable): a possible occluder."),
    params: Path = typer.Option(Path("params.yaml"), "--params", help="Parameter file (sections models, extract, sample, decode)."),
    profile: Optional[str] = typer.Option(
        None, "--profile", help="'smoke' (tiny random-weight models) or 'real'; overrides models.profile."),
) -> None:
    """Run the four steps on one image and one box; print the answer and scores, write the figure."""
    from pipeline.api import PredictInputError, VLMSAM
    from pipeline.attention.vlm import VlmNotAvailableError
    from pipeline.visualize import figure_format, prediction_figure_data, write_figure

    try:
        figure_format(out)  # refuse a bad extension before any model is loaded
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--out") from e
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        context = [parse_other(o) for o in (others or [])]
        model = VLMSAM.from_params(params, **predict_overrides(profile))
        if model.smoke:
            typer.secho(SMOKE_SHOUT, fg="red", bold=True, err=True)
        pred = model.predict(image, box, class_name, others=context)
        path = write_figure(prediction_figure_data(pred, _rgb(image)), out)
    except (PredictInputError, VlmNotAvailableError, FileNotFoundError, KeyError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=1) from e
    occ = pred.occlusion
    typer.echo(f"occlusion question ({occ.listing}) answer: {occ.raw.strip()!r}")
    typer.echo(f"  parsed: {occ.parsed_json}" if occ.parsed_json else f"  not parsed: {occ.error}")
    typer.echo(f"  occluders named: {occ.occluder_names or 'none'}; matched objects: {occ.occluder_ids or 'none'}")
    typer.echo(f"visible score {pred.visible_score:.3f} ({int(pred.visible_mask.sum())} px), "
               f"amodal score {pred.amodal_score:.3f} ({int(pred.amodal_mask.sum())} px)")
    typer.echo(f"completion {pred.completion} (occluders: {pred.occluder_source or 'not used'}), "
               f"prompt {pred.prompt_mode}, {len(pred.labels)} points, fallback: {pred.fallback or 'none'}")
    typer.echo(f"amodal mask from: {pred.amodal_source}")
    for o in pred.occluder_masks:
        how = "located by its own attention" if o.located else f"object {o.index}"
        typer.echo(f"  occluder {o.name!r} ({how}): {int(o.mask.sum())} px, score {o.score:.3f}")
    typer.echo(f"wrote {path}")
    if pred.smoke:
        typer.secho(SMOKE_SHOUT, fg="red", bold=True)


def _rgb(image: Path):
    from pipeline.api import load_input_image

    return load_input_image(image).rgb


def visualize_command(
    n: int = typer.Option(6, "--n", min=1, help="Number of instances to draw (spread over occlusion rates)."),
    out: Path = typer.Option(Path("reports/figures"), "--out", help="Folder for the PNG figures."),
    params: Path = typer.Option(Path("params.yaml"), "--params", help="Parameter file (its dataset section; under dataset.proposals also evaluate.proposal_score)."),
    cache: Path = typer.Option(DEFAULT_CACHE, "--cache", help="Attention cache written by extract."),
    points: Path = typer.Option(DEFAULT_POINTS, "--points", help="Points file written by sample."),
    visible: Path = typer.Option(DEFAULT_VISIBLE, "--visible", help="Visible predictions written by decode."),
    amodal: Path = typer.Option(DEFAULT_AMODAL, "--amodal", help="Amodal predictions written by decode."),
) -> None:
    """Draw the 8-panel pipeline figure for N instances of a finished run."""
    from pipeline.attention.cache import CacheFormatError
    from pipeline.datasets.record import DatasetError
    from pipeline.finished_run import load_shown_dataset
    from pipeline.predictions import PredictionFormatError
    from pipeline.visualize import RunOutputs, visualize_run

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        outputs = RunOutputs(cache, points, visible, amodal)
        outputs.check()  # before loading the dataset: a missing output is the likelier mistake
        dataset = load_shown_dataset(params, outputs)
        paths = visualize_run(dataset, outputs, n, out)
    except (FileNotFoundError, DatasetError, CacheFormatError, PredictionFormatError, KeyError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=1) from e
    for path in paths:
        typer.echo(f"wrote {path}")
