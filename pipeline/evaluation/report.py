"""Writing an evaluation: metrics.json, report.md and the plot files (file names in
`pipeline.evaluation`'s docstring)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.atomic import atomic_path, write_json, write_text
from pipeline.evaluation.ap import AP_KEYS, PR_IOUS, APResult
from pipeline.evaluation.miou import BUCKETS, FIGURES, PARTIAL_MAX_RATE
from pipeline.evaluation.units import UNIT, UNIT_TEXT, format_figure

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
PR_CURVES_CSV = "plots/pr_curves.csv"
PR_CURVES_PNG = "plots/pr_curves.png"
MIOU_BY_OCCLUSION_CSV = "plots/miou_by_occlusion.csv"
MIOU_BY_OCCLUSION_PNG = "plots/miou_by_occlusion.png"

SMOKE_BANNER = ("**SMOKE RUN: these numbers come from models with RANDOM WEIGHTS. "
                "They test the plumbing and are NOT results.**")


@dataclass(frozen=True)
class EvaluationContext:
    """What was evaluated, for the report's header."""

    gt_file: Path
    amodal_file: Path
    visible_file: Path
    n_images: int
    n_visible_gt: int  # instances with a non-empty visible mask (the visible AP ground truth)


def metrics_dict(ap_amodal: APResult, ap_visible: APResult, miou: dict, buckets: dict,
                 n_gt: int, n_pred: int, smoke: bool, protocol: dict, run: dict, counts: dict) -> dict:
    """metrics.json's content, keys in their fixed order. Amodal AP/AR are null when the
    protocol withholds them (`protocol["amodal_ap"]` says why)."""
    withheld = protocol["amodal_ap"] != "reported"
    return {
        "unit": UNIT,
        "protocol": protocol,
        "run": run,
        "counts": counts,
        "amodal": {k: None if withheld else ap_amodal.stats[k] for k in AP_KEYS},
        "visible": {k: ap_visible.stats[k] for k in AP_KEYS},
        "miou": {k: miou[k] for k in FIGURES},
        "buckets": {b: {"n": buckets[b]["n"], **{k: buckets[b][k] for k in FIGURES}}
                    for b in BUCKETS},
        "n_gt": int(n_gt),
        "n_pred": int(n_pred),
        "smoke": bool(smoke),
    }


def write_evaluation(out_dir: str | os.PathLike, metrics: dict, ap_amodal: APResult,
                     ap_visible: APResult, binned: list[dict], context: EvaluationContext) -> None:
    """Write plots, report.md and (last) metrics.json under `out_dir`, each atomically."""
    out = Path(out_dir)
    (out / PLOTS_DIR).mkdir(parents=True, exist_ok=True)
    smoke = metrics["smoke"]
    _write_pr_curves(out, ap_amodal, ap_visible, smoke, metrics["protocol"]["amodal_ap"] != "reported")
    _write_miou_by_occlusion(out, binned, smoke)
    write_text(out / REPORT_FILE, report_markdown(metrics, context))
    write_json(out / METRICS_FILE, metrics)


def report_markdown(metrics: dict, context: EvaluationContext) -> str:
    """The human-readable report: protocol, run and counts first, then the AP/AR table, the
    mIoU table per bucket and the plot list."""
    lines = ["# Evaluation report", ""]
    if metrics["smoke"]:
        lines += [f"> {SMOKE_BANNER}", ""]
    lines += _header_lines(metrics)
    lines += [
        f"- ground truth: `{context.gt_file}` ({context.n_images} images, "
        f"{metrics['n_gt']} instances, {context.n_visible_gt} with a visible part)",
        f"- predictions: amodal `{context.amodal_file}`, visible `{context.visible_file}` "
        f"({metrics['n_pred']} entries per file)",
        skipped_line(metrics.get("skipped")),
        "",
        f"## Mask AP / AR (pycocotools COCOeval, iouType segm), {UNIT_TEXT}",
        "",
        "| metric | amodal | visible |",
        "|---|---:|---:|",
    ]
    lines += [f"| {k} | {format_figure(metrics['amodal'][k])} | {format_figure(metrics['visible'][k])} |"
              for k in AP_KEYS]
    b = metrics["buckets"]
    lines += [
        "",
        "Amodal AP uses amodal masks and areas; visible AP uses visible masks and areas and "
        "leaves out instances with no visible part. AP averages precision over IoU thresholds "
        "0.50:0.95 (AP50, AP75: at one threshold); APs/APm/APl restrict it to small (< 32²), "
        "medium and large (> 96² pixels) objects.",
        "",
        _ar_paragraph(metrics["protocol"]),
        "",
        f"## mIoU per instance, {UNIT_TEXT}",
        "",
        f"Prediction and ground truth paired: {metrics['protocol']['miou']}."
        + _matches_text(metrics.get("proposal_matches")),
        "",
        f"| figure | all | none (r = 0) | partial (0 < r <= {PARTIAL_MAX_RATE}) "
        f"| heavy (r > {PARTIAL_MAX_RATE}) |",
        "|---|---:|---:|---:|---:|",
        f"| n | {sum(b[x]['n'] for x in BUCKETS)} | "
        + " | ".join(str(b[x]["n"]) for x in BUCKETS) + " |",
    ]
    lines += [f"| {f} | {format_figure(metrics['miou'][f])} | "
              + " | ".join(format_figure(b[x][f]) for x in BUCKETS) + " |" for f in FIGURES]
    lines += [
        "",
        "r is the ground truth's occlusion rate 1 - visible area / amodal area. "
        "amodal_occluded = IoU(pred amodal - GT visible, GT amodal - GT visible), averaged "
        "only over instances with a hidden part. IoU of two empty masks counts as 1. "
        "'—' marks a figure with no instance to average over.",
        "",
        "## Plots",
        "",
        f"- precision-recall at IoU 0.5 and 0.75: `{PR_CURVES_CSV}`, `{PR_CURVES_PNG}`",
        f"- mIoU against occlusion rate: `{MIOU_BY_OCCLUSION_CSV}`, `{MIOU_BY_OCCLUSION_PNG}`",
        "",
    ]
    return "\n".join(lines)


def _ar_paragraph(protocol: dict) -> str:
    text = ("AR1, AR10, AR100 are COCOeval's average recall (IoU 0.50:0.95) when only the 1, 10 "
            "or 100 highest-scored predictions per image are kept.")
    if protocol.get("proposals") is not None:
        return text + " Predictions come from the detector's proposals, as many per image as it kept."
    return text + (" This protocol makes exactly one prediction per ground-truth instance, so AR100 is "
                   "the recall of all predictions, and AR1 / AR10 fall below it only because images hold "
                   "more than 1 / 10 instances (the lower-scored ones are cut), not because an object was missed.")


def _matches_text(matches: dict | None) -> str:
    if matches is None:
        return ""
    return (f" Matched: {matches['matched']}; ground truth unmatched (misses): "
            f"{matches['ground_truth_unmatched']}; predictions unmatched (false positives): "
            f"{matches['predictions_unmatched']}.")


def skipped_line(skipped: dict | None) -> str:
    """The report's line on records left out (metrics.json "skipped")."""
    if skipped is None:
        return "- skipped: not recorded (no skip list beside the amodal predictions)"
    reasons = ", ".join(f"{reason}: {n}" for reason, n in skipped["reasons"].items()) or "none"
    return (f"- skipped (dataset.on_error): {skipped['images']} images, {skipped['instances']} "
            f"ground-truth instances without prediction (counted as misses; malformed annotations "
            f"are not ground truth); records by reason: {reasons}")


def pr_curve_rows(ap_amodal: APResult, ap_visible: APResult, smoke: bool,
                  amodal_withheld: bool = False) -> list[dict]:
    """Rows of pr_curves.csv: recall and the four precision columns (None = undefined, or
    withheld with the amodal AP)."""
    rows = []
    for r, recall in enumerate(ap_amodal.recall_thresholds):
        row = {"recall": round(float(recall), 4)}
        for view, result in (("amodal", ap_amodal), ("visible", ap_visible)):
            for iou in PR_IOUS:
                withheld = amodal_withheld and view == "amodal"
                row[f"{view}_iou{round(iou * 100)}"] = None if withheld else _finite(result.precision[iou][r])
        row["smoke"] = smoke
        rows.append(row)
    return rows


def _write_pr_curves(out: Path, ap_amodal: APResult, ap_visible: APResult, smoke: bool,
                     amodal_withheld: bool) -> None:
    rows = pr_curve_rows(ap_amodal, ap_visible, smoke, amodal_withheld)
    _write_csv(out / PR_CURVES_CSV, rows)
    fig, axes = _figure(1, 2, smoke, "Precision-recall (COCOeval, all areas, maxDets 100)")
    recall = [row["recall"] for row in rows]
    for ax, view in zip(axes, ("amodal", "visible")):
        for iou in PR_IOUS:
            column = f"{view}_iou{round(iou * 100)}"
            ax.plot(recall, [np.nan if row[column] is None else row[column] for row in rows],
                    label=f"IoU {iou}")
        if view == "amodal" and amodal_withheld:
            view += " (withheld: tied scores under modal-given)"
        ax.set(title=view, xlabel=f"recall ({UNIT})", ylabel=f"precision ({UNIT})", xlim=(0, 1), ylim=(0, 1.02))
        ax.legend()
    _save_png(fig, out / PR_CURVES_PNG)


def _write_miou_by_occlusion(out: Path, binned: list[dict], smoke: bool) -> None:
    rows = [{"rate_low": round(b["rate_low"], 6), "rate_high": round(b["rate_high"], 6),
             "rate_center": round((b["rate_low"] + b["rate_high"]) / 2, 6), "n": b["n"],
             **{f: b[f] for f in FIGURES}, "smoke": smoke} for b in binned]
    _write_csv(out / MIOU_BY_OCCLUSION_CSV, rows)
    fig, axes = _figure(1, 1, smoke, "mIoU against ground-truth occlusion rate")
    ax = axes[0]
    centers = [row["rate_center"] for row in rows]
    for f in FIGURES:
        ax.plot(centers, [np.nan if row[f] is None else row[f] for row in rows], marker="o", label=f)
    ax.set(xlabel=f"occlusion rate (bin centre, {UNIT})", ylabel=f"mIoU ({UNIT})", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend()
    _save_png(fig, out / MIOU_BY_OCCLUSION_PNG)


def _figure(n_rows: int, n_cols: int, smoke: bool, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(n_rows, n_cols, figsize=(5 * n_cols, 4), squeeze=False)
    if smoke:
        title = "SMOKE RUN (random weights, not results): " + title
    fig.suptitle(title, fontsize=10, color="red" if smoke else "black")
    return fig, list(axes.flat)


def _save_png(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def _write_csv(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else str(v).lower() if isinstance(v, bool) else v)
                      for k, v in row.items()} for row in rows)
    write_text(path, buffer.getvalue())


def _finite(v) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v


def _header_lines(metrics: dict) -> list[str]:
    """The report's first section: protocol, run and counts of metrics.json in words."""
    p, run, c = metrics["protocol"], metrics["run"], metrics["counts"]
    lines = ["## Protocol", "", "Given to the method: " + "; ".join(p["given"]) + ".",
             f"Predictions: {p['predictions']}.", p["comparability"], ""]
    if p["amodal_ap"] != "reported":
        lines += [f"**Amodal AP/AR {p['amodal_ap']}.**", ""]
    if p.get("proposals") is not None:
        q = p["proposals"]
        skipped = ", ".join(f"{reason}: {n}" for reason, n in q["skipped"].items()) or "none"
        lines += [f"Proposals file: `{q['path']}` (sha256 `{q['sha256']}`): {q['count']} entries, "
                  f"{q['kept']} kept, {q['below_min_score']} below dataset.proposal_min_score "
                  f"{q['min_score']}, {q['other_images']} of images outside the run; skipped by reason: "
                  f"{skipped}.", ""]
    lines += [f"All figures are {UNIT_TEXT}.", "", "## Run", ""]
    lines += [f"- {key}: `{_json(value)}`" for key, value in run.items()]
    lines += ["", "## Counts", ""]
    lines += [f"- {key}: `{_json(value)}`" for key, value in c.items()]
    lines += [""]
    return lines


def _json(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)
