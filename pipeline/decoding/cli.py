"""`vlmsam decode`: the decode stage on the command line (the options mirror params.yaml)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

from pipeline.decoding.params import (
    DEFAULT_AMODAL,
    DEFAULT_CACHE,
    DEFAULT_POINTS,
    DEFAULT_VISIBLE,
    DecodeParams,
    SamModelParams,
)

_D, _S = DecodeParams(), SamModelParams()


def decode_command(
    annotations: Path = typer.Option(..., "--annotations", help="Dataset annotation JSON (any supported flavour)."),
    flavour: Optional[str] = typer.Option(None, "--flavour", help="Dataset flavour (d2sa, cocoa, cocoa_original, kins2020, kins_coco); detected when omitted."),
    images: Optional[Path] = typer.Option(None, "--images", help="Image folder; default: the annotation file's folder."),
    max_images: Optional[int] = typer.Option(None, "--max-images", min=1, help="Decode only the first N images (as the earlier stages)."),
    points: Path = typer.Option(DEFAULT_POINTS, "--points", help="Point prompts from the sample stage (Parquet)."),
    cache: Path = typer.Option(DEFAULT_CACHE, "--cache", help="Attention cache of the extract stage (read for the VLM's occluders only)."),
    out_visible: Path = typer.Option(DEFAULT_VISIBLE, "--out-visible", help="Visible prediction file to write."),
    out_amodal: Path = typer.Option(DEFAULT_AMODAL, "--out-amodal", help="Amodal prediction file to write."),
    profile: str = typer.Option(..., "--profile", help="'smoke' (seeded random EfficientSAM, outputs marked smoke) or 'real' (official checkpoint)."),
    variant: str = typer.Option(_S.variant, "--variant", help="EfficientSAM variant: vitt or vits."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="EfficientSAM checkpoint; default: the search order of `vlmsam weights`."),
    amodal_decoder: Optional[Path] = typer.Option(None, "--amodal-decoder", help="Mask-decoder state dict for amodal masks (with --completion decoder)."),
    prompt_mode: str = typer.Option(_D.prompt_mode, "--prompt-mode", help="points | box | points+box (as the sample stage)."),
    completion: str = typer.Option(_D.completion, "--completion", help="decoder | visible | hull | occluder_hull | occluder_box | exemplar."),
    occluders: str = typer.Option(_D.occluders, "--occluders", help="Occluders for occluder_* completions: vlm | gt | overlap."),
    modal_given: bool = typer.Option(_D.modal_given, "--modal-given/--no-modal-given", help="Complete amodal masks from ground-truth visible masks (modal-given protocol)."),
    max_queries_per_call: Optional[int] = typer.Option(None, "--max-queries-per-call", min=1, help="Cap on instances per decoder call; default: all of an image in one call."),
    device: str = typer.Option(_D.device, "--device", help="Torch device for EfficientSAM (auto = CUDA when available, cpu, cuda, cuda:N)."),
) -> None:
    """EfficientSAM visible and amodal masks for every instance, as COCO-RLE prediction files."""
    from pipeline.attention.cache import CacheFormatError
    from pipeline.datasets import DatasetError, load_dataset
    from pipeline.decoding.prompts import PromptError
    from pipeline.decoding.run import run_decode
    from pipeline.models.efficient_sam import CheckpointError
    from pipeline.weights import MissingWeightsError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        params = DecodeParams(prompt_mode, completion, occluders, modal_given, max_queries_per_call, device)
        sam = SamModelParams(variant, None if checkpoint is None else str(checkpoint),
                             None if amodal_decoder is None else str(amodal_decoder))
        dataset = load_dataset(annotations, flavour=flavour, image_dir=images, max_images=max_images)
        summary = run_decode(dataset, params, profile, sam, points, cache, out_visible, out_amodal)
    except (DatasetError, PromptError, CacheFormatError, CheckpointError, MissingWeightsError,
            FileNotFoundError, ValueError, KeyError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=1) from e
    prefix = "SMOKE (random weights, not results): " if summary.smoke else ""
    typer.echo(f"{prefix}{summary.n_visible} visible and {summary.n_amodal} amodal masks of {summary.n_images} images "
               f"({summary.decoded_images} decoded now) -> {summary.visible_path}, {summary.amodal_path}")
