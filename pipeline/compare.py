"""`vlmsam compare`: one report comparing DVC experiments (e.g. a prompt-mode sweep).

Reads `dvc exp show --json` (run here, or a saved file) and writes a Markdown table with the
parameters that differ between the experiments and the headline metrics of each. A SMOKE
banner heads the report when any experiment's metrics come from random weights.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import typer

from pipeline.atomic import write_text
from pipeline.evaluation.units import UNIT_TEXT, format_figure

METRICS_FILE = "reports/metrics.json"
HEADLINE = (
    ("amodal AP", ("amodal", "AP")),
    ("amodal AP50", ("amodal", "AP50")),
    ("visible AP", ("visible", "AP")),
    ("mIoU amodal", ("miou", "amodal_full")),
    ("mIoU occluded", ("miou", "amodal_occluded")),
    ("mIoU visible", ("miou", "visible")),
)
SMOKE_BANNER = ("> **SMOKE: at least one experiment ran with RANDOM WEIGHTS; its numbers test the "
                "plumbing and are NOT results.**")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def experiments_from_dvc_json(entries: list, metrics_file: str = METRICS_FILE) -> list[dict]:
    """[{name, params (flat), metrics}] for the baseline commits and their experiments.

    The workspace row is left out (it repeats the last experiment run). Rows with an error
    or without the metrics file raise ValueError naming the experiment.
    """
    rows = []

    def add(rev: dict, name: str) -> None:
        if rev.get("error"):
            raise ValueError(f"experiment {name}: dvc reports {rev['error'].get('msg')}")
        data = rev.get("data") or {}
        metrics = (data.get("metrics") or {}).get(metrics_file, {}).get("data")
        if metrics is None:
            raise ValueError(f"experiment {name}: no {metrics_file} (did its evaluate stage run?)")
        params = _flatten((data.get("params") or {}).get("params.yaml", {}).get("data") or {})
        rows.append({"name": name, "params": params, "metrics": metrics})

    for entry in entries:
        if entry.get("rev") == "workspace":
            continue
        add(entry, entry.get("name") or entry["rev"][:7])
        for exp in entry.get("experiments") or []:
            for rev in exp.get("revs", []):
                add(rev, rev.get("name") or exp.get("name") or rev["rev"][:7])
    return rows


def comparison_markdown(rows: list[dict]) -> str:
    """The comparison report: differing parameters and headline metrics (fractions in [0, 1])
    per experiment."""
    if not rows:
        raise ValueError("no experiments to compare (run `dvc exp run -S ...` first)")
    keys = sorted({k for r in rows for k in r["params"]})
    differing = [k for k in keys if len({json.dumps(r["params"].get(k)) for r in rows}) > 1]
    smoke = any(bool(r["metrics"].get("smoke")) for r in rows)
    lines = ["# Experiment comparison", ""]
    if smoke:
        lines += [SMOKE_BANNER, ""]
    header = ["experiment", *differing, *(h for h, _ in HEADLINE), "smoke"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        values = [r["name"], *(str(r["params"].get(k, "—")) for k in differing)]
        for _, (group, key) in HEADLINE:
            values.append(format_figure((r["metrics"].get(group) or {}).get(key)))
        values.append("yes" if r["metrics"].get("smoke") else "no")
        lines.append("| " + " | ".join(values) + " |")
    lines += ["", f"AP from pycocotools COCOeval (segm); mIoU per prompted instance; all {UNIT_TEXT}; "
              "'—' = not reported (e.g. amodal AP withheld under modal-given). "
              "Columns before the metrics are the parameters that differ between the rows."]
    return "\n".join(lines) + "\n"


def compare_command(
    out: Path = typer.Option(Path("reports/compare.md"), "--out", help="Markdown report to write."),
    exp_json: Path | None = typer.Option(None, "--exp-json",
                                         help="Saved `dvc exp show --json` output; default: run it here."),
    metrics_file: str = typer.Option(METRICS_FILE, "--metrics-file", help="Metrics file of the evaluate stage."),
) -> None:
    """Compare DVC experiments (e.g. a `dvc exp run -S prompt_mode=...` sweep) in one report."""
    if exp_json is not None:
        text = exp_json.read_text(encoding="utf-8")
        source = str(exp_json)
    else:
        proc = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise typer.BadParameter(f"`dvc exp show --json` failed: {proc.stderr.strip()}")
        text, source = proc.stdout, "dvc exp show --json"
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as e:
        raise typer.BadParameter(f"{source}: not JSON ({e})") from e
    write_text(out, comparison_markdown(experiments_from_dvc_json(entries, metrics_file)))
    typer.echo(f"wrote {out}")
