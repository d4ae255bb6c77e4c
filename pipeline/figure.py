"""The pipeline figure: eight panels showing every step for one instance.

Panels: (1) input with box, (2) the VLM's occlusion answer, (3) attention per chosen
layer, (4) aggregated map, (5) point prompts over the image, (6) visible mask,
(7) amodal mask with the outlines of the occluder masks the completion used, (8) against
ground truth where known, with a legend of its colours.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.gridspec import GridSpecFromSubplotSpec  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

SMOKE_BANNER = "SMOKE RUN — random weights, not a result"
# panel 8: (label, RGBA) of the prediction against the ground-truth amodal mask
GT_COLOURS = (
    ("hit: predicted and in GT amodal", (0.0, 0.9, 0.2, 0.5)),
    ("missed: GT amodal, not predicted", (1.0, 0.0, 0.0, 0.6)),
    ("extra: predicted, not in GT amodal", (1.0, 1.0, 0.0, 0.6)),
)
OCCLUDER_COLOURS = ("cyan", "magenta", "white", "lime", "orange")


@dataclass
class FigureData:
    """What the figure shows for one instance; all arrays in original-image pixels."""

    image: np.ndarray  # uint8 [H, W, 3]
    box_xyxy: tuple[float, float, float, float]
    class_name: str
    occlusion_text: str
    layer_maps: dict[int, np.ndarray]  # layer -> float [H, W] (NaN where no token)
    aggregated_map: np.ndarray  # float [H, W]
    points: np.ndarray  # float [N, 2] (x, y)
    labels: np.ndarray  # int [N] 1 positive / 0 negative
    visible_mask: np.ndarray  # bool [H, W]
    visible_score: float
    amodal_mask: np.ndarray  # bool [H, W]
    amodal_score: float
    smoke: bool
    gt_visible: np.ndarray | None = None
    gt_amodal: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)  # e.g. fallback reason, completion variant
    occluder_masks: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (label, bool [H, W]) used by the completion


def _show_image(ax, data: FigureData, box: bool = True) -> None:
    ax.imshow(data.image)
    if box:
        x0, y0, x1, y1 = data.box_xyxy
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="yellow", lw=1.5))
    ax.set_axis_off()


def _overlay(ax, data: FigureData, mask: np.ndarray, colour: tuple[float, float, float], title: str) -> None:
    _show_image(ax, data)
    rgba = np.zeros((*mask.shape, 4), np.float32)
    rgba[mask] = (*colour, 0.55)
    ax.imshow(rgba)
    ax.set_title(title, fontsize=9)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else float("nan")


def draw_pipeline_figure(data: FigureData, out_path: str | os.PathLike, image_format: str = "png") -> None:
    """Write the 8-panel pipeline figure for one instance to `out_path` (a path or binary file) in
    `image_format` ('png' | 'jpeg')."""
    fig = build_pipeline_figure(data)
    fig.savefig(out_path, dpi=90, bbox_inches="tight", format=image_format)
    plt.close(fig)


def build_pipeline_figure(data: FigureData):
    """The 8-panel pipeline figure for one instance (a matplotlib Figure; the caller closes it)."""
    fig = plt.figure(figsize=(16, 8.5))
    grid = fig.add_gridspec(2, 4, hspace=0.25, wspace=0.08)
    title = f"{data.class_name}"
    if data.notes:
        title += "  (" + "; ".join(data.notes) + ")"
    if data.smoke:
        title = f"{SMOKE_BANNER}\n{title}"
    fig.suptitle(title, fontsize=12, color="red" if data.smoke else "black")

    ax = fig.add_subplot(grid[0, 0])
    _show_image(ax, data)
    ax.set_title("1 input + box", fontsize=9)

    ax = fig.add_subplot(grid[0, 1])
    ax.set_axis_off()
    ax.set_title("2 occlusion answer", fontsize=9)
    lines = [w for line in (data.occlusion_text or "(none)").splitlines() for w in textwrap.wrap(line, 48) or [""]]
    ax.text(0.0, 1.0, "\n".join(lines[:22]), va="top", ha="left", fontsize=7, family="monospace",
            transform=ax.transAxes, parse_math=False)  # model text is shown as is ('$' is no math)

    layers = sorted(data.layer_maps)
    sub = GridSpecFromSubplotSpec(1, max(1, len(layers)), subplot_spec=grid[0, 2], wspace=0.05)
    for i, layer in enumerate(layers):
        ax = fig.add_subplot(sub[0, i])
        ax.imshow(data.image, alpha=0.35)
        ax.imshow(data.layer_maps[layer], cmap="inferno", alpha=0.75)
        ax.set_title(f"3 layer {layer}", fontsize=8)
        ax.set_axis_off()

    ax = fig.add_subplot(grid[0, 3])
    ax.imshow(data.image, alpha=0.35)
    ax.imshow(data.aggregated_map, cmap="inferno", alpha=0.75)
    ax.set_title("4 aggregated map", fontsize=9)
    ax.set_axis_off()

    ax = fig.add_subplot(grid[1, 0])
    _show_image(ax, data)
    pts = np.asarray(data.points, float).reshape(-1, 2)
    labels = np.asarray(data.labels).reshape(-1)
    for lab, colour, marker in ((1, "lime", "*"), (0, "red", "X")):
        sel = labels == lab
        ax.scatter(pts[sel, 0], pts[sel, 1], c=colour, marker=marker, s=120, edgecolors="black")
    ax.set_title(f"5 points ({int((labels == 1).sum())}+ / {int((labels == 0).sum())}-)", fontsize=9)

    ax = fig.add_subplot(grid[1, 1])
    _overlay(ax, data, data.visible_mask, (0.1, 0.6, 1.0), f"6 visible (pred IoU {data.visible_score:.2f})")
    ax = fig.add_subplot(grid[1, 2])
    _overlay(ax, data, data.amodal_mask, (1.0, 0.5, 0.1), f"7 amodal (pred IoU {data.amodal_score:.2f})")
    _draw_occluders(ax, data.occluder_masks)

    ax = fig.add_subplot(grid[1, 3])
    if data.gt_amodal is not None and data.gt_visible is not None:
        _show_image(ax, data)
        rgba = np.zeros((*data.gt_amodal.shape, 4), np.float32)
        (_, hit), (_, missed), (_, extra) = GT_COLOURS
        rgba[data.gt_amodal & ~data.amodal_mask] = missed
        rgba[data.amodal_mask & ~data.gt_amodal] = extra
        rgba[data.amodal_mask & data.gt_amodal] = hit
        ax.imshow(rgba)
        ax.legend(handles=[Patch(facecolor=c, edgecolor="black", label=label) for label, c in GT_COLOURS],
                  loc="upper center", bbox_to_anchor=(0.5, -0.02), fontsize=7, frameon=False)
        ax.set_title(
            f"8 vs GT: amodal IoU {_iou(data.amodal_mask, data.gt_amodal):.2f}, "
            f"visible IoU {_iou(data.visible_mask, data.gt_visible):.2f}",
            fontsize=9,
        )
    else:
        ax.set_axis_off()
        ax.set_title("8 vs GT: no ground truth", fontsize=9)
    return fig


def _draw_occluders(ax, occluders: list[tuple[str, np.ndarray]]) -> None:
    """Outline each occluder mask on `ax`, with a legend naming them."""
    handles = []
    for k, (label, mask) in enumerate(occluders):
        colour = OCCLUDER_COLOURS[k % len(OCCLUDER_COLOURS)]
        if mask.any():
            ax.contour(mask.astype(np.float32), levels=[0.5], colors=[colour], linewidths=1.5)
        handles.append(Line2D([], [], color=colour, lw=1.5, label=f"occluder: {label}"))
    if handles:
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02), fontsize=7, frameon=False)
