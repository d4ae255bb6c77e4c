"""`vlmsam demo`: the main job, `dvc repro` in the project folder (an alias, not a second path).

With the default params.yaml this runs extract -> sample -> decode -> evaluate on the embedded
sample dataset, with the real models when their checkpoints are present and the smoke profile
otherwise (`models.profile: auto`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import typer

METRICS = Path("reports/metrics.json")
REPORT = Path("reports/report.md")


@contextlib.contextmanager
def working_dir(path: Path):
    """Run the block with `path` as the current directory."""
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def dvc_executable() -> str:
    """The `dvc` beside this Python interpreter (the project's environment), else the one on PATH."""
    beside = Path(sys.executable).parent / "dvc"
    found = str(beside) if beside.is_file() else shutil.which("dvc")
    if found is None:
        raise typer.BadParameter("dvc is not installed in this environment (run setup.sh)")
    return found


def demo_command(
    project: Path = typer.Option(Path("."), "--project", help="Project folder (holding dvc.yaml and params.yaml)."),
) -> None:
    """Run the pipeline with `dvc repro` (the embedded sample by default) and say where the report is."""
    if not (project / "dvc.yaml").is_file():
        raise typer.BadParameter(f"{project}: no dvc.yaml here; run from the project folder or pass --project")
    code = subprocess.call([dvc_executable(), "repro"], cwd=project)
    if code != 0:
        raise typer.Exit(code=code)
    metrics = json.loads((project / METRICS).read_text(encoding="utf-8"))
    if metrics.get("smoke"):
        typer.echo("SMOKE RUN (random weights): the report tests the plumbing, its numbers are not results.")
    typer.echo(f"report: {project / REPORT}; metrics: {project / METRICS}")
