"""`vlmsam demo`: a small synthetic scene set through the whole pipeline, on a fresh machine.

Uses the lightest real models (LLaVA-OneVision-0.5B + EfficientSAM ViT-T) when their weights
are present; otherwise says which are missing and runs the smoke profile (tiny random-weight
models, every output marked SMOKE).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import typer

log = logging.getLogger("vlmsam.demo")


@contextlib.contextmanager
def working_dir(path: Path):
    """Run the block with `path` as the current directory."""
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def choose_profile(requested: str) -> tuple[dict, list[str]]:
    """(overrides, missing checkpoint names) for 'auto' | 'real' | 'smoke'."""
    from pipeline.profiles import LIGHT_REAL_OVERRIDES, SMOKE_OVERRIDES, apply_overrides, default_params
    from pipeline.weights import weights_status_for_models

    if requested == "smoke":
        return SMOKE_OVERRIDES, []
    models = apply_overrides(default_params(), LIGHT_REAL_OVERRIDES)["models"]
    missing = [f"{r.name} (get it: {r.get_it})" for r in weights_status_for_models(models) if r.needed and not r.present]
    if not missing:
        return LIGHT_REAL_OVERRIDES, []
    if requested == "real":
        raise typer.BadParameter("real weights missing: " + "; ".join(missing))
    return SMOKE_OVERRIDES, missing


def run_pipeline(workdir: Path, params_file: Path) -> dict:
    """Run extract -> sample -> decode -> evaluate in `workdir` (outputs under cache/, reports/)."""
    from stages import decode, evaluate, extract, sample

    with working_dir(workdir):
        extract.main(["--params", str(params_file)])
        sample.main(["--params", str(params_file)])
        decode.main(["--params", str(params_file)])
        return evaluate.main(["--params", str(params_file)])


def demo_command(
    workdir: Path = typer.Option(Path("demo"), "--workdir", help="Folder for the demo's data, params, cache and reports."),
    images: int = typer.Option(4, "--images", min=1, help="Number of synthetic images."),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic scenes."),
    profile: str = typer.Option("auto", "--profile",
                                help="auto: real light models when present, else smoke; real; smoke."),
) -> None:
    """Generate a small synthetic scene set and run the whole pipeline on it."""
    from pipeline.profiles import apply_overrides, default_params, write_params
    from pipeline.synth import generate

    if profile not in ("auto", "real", "smoke"):
        raise typer.BadParameter(f"--profile must be auto, real or smoke, got {profile!r}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    workdir = workdir.resolve()
    overrides, missing = choose_profile(profile)
    if missing:
        typer.echo("Light real models not found, running the SMOKE profile (random weights). Missing:")
        for name in missing:
            typer.echo(f"  - {name}")
    annotations = generate(workdir / "data", images, seed=seed)
    params = apply_overrides(default_params(), {
        **overrides,
        "dataset.annotations": str(annotations),
        "dataset.flavour": "d2sa",
    })
    params_file = workdir / "params.yaml"
    write_params(params_file, params)
    from pipeline.evaluation.units import UNIT, format_figure

    metrics = run_pipeline(workdir, params_file)
    smoke = metrics["smoke"]
    typer.echo(("SMOKE RUN (random weights): the numbers below test the plumbing, they are not results.\n"
                if smoke else "") +
               f"amodal AP {format_figure(metrics['amodal']['AP'], 'n/a')}, "
               f"visible AP {format_figure(metrics['visible']['AP'], 'n/a')}, "
               f"mIoU amodal {format_figure(metrics['miou']['amodal_full'], 'n/a')}, "
               f"visible {format_figure(metrics['miou']['visible'], 'n/a')} (unit: {UNIT} 0-1)")
    typer.echo(f"report: {workdir / 'reports' / 'report.md'}")
