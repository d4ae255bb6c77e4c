"""`vlmsam synth`: write a synthetic D2SA-format dataset."""

from __future__ import annotations

from pathlib import Path

import typer


def synth_command(
    out: Path = typer.Option(..., "--out", help="Output folder: D2S_amodal_synth.json and images/ go here."),
    images: int = typer.Option(..., "--images", min=1, help="Number of images to generate."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives byte-identical output."),
    width: int = typer.Option(640, "--width", min=32, help="Image width in pixels."),
    height: int = typer.Option(480, "--height", min=32, help="Image height in pixels."),
    image_format: str = typer.Option("jpg", "--format", help="Image file format: jpg or png."),
    world: str = typer.Option("free", "--world", help="free: random shapes per instance; rigid: one "
                              "silhouette per category, instances rotated (as D2S products)."),
) -> None:
    """Generate synthetic scenes with known amodal and visible masks (D2SA schema)."""
    from pipeline.synth.generate import IMAGE_FORMATS, generate
    from pipeline.synth.scene import WORLDS

    if image_format not in IMAGE_FORMATS:
        raise typer.BadParameter(f"must be one of {IMAGE_FORMATS}", param_hint="--format")
    if world not in WORLDS:
        raise typer.BadParameter(f"must be one of {WORLDS}", param_hint="--world")
    path = generate(out, images, seed=seed, width=width, height=height, image_format=image_format, world=world)
    typer.echo(f"wrote {images} images and {path}")
