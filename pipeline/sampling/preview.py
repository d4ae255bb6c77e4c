"""Quick-look PNGs of the sample stage: image, attention map overlay, box, search region and
the points (positives green, negatives red), one file per instance."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from PIL import Image  # noqa: E402

from pipeline.atomic import atomic_path  # noqa: E402
from pipeline.attention.cache import read_image, read_info  # noqa: E402
from pipeline.datasets.record import AmodalDataset, DatasetError  # noqa: E402
from pipeline.figure import SMOKE_BANNER  # noqa: E402
from pipeline.sampling.params import SampleParams  # noqa: E402
from pipeline.sampling.pixel_map import Grid, paint, search_region, split_views, token_values  # noqa: E402
from pipeline.sampling.run import LayerChoice  # noqa: E402

PREVIEW_CELLS = 256  # resolution of the whole-image map drawn under the points


def instance_map(cache_path, image_id: int, gt_id: int, params: SampleParams) -> np.ndarray:
    """The instance's combined attention map over the whole image [rows, cols] (NaN: no token),
    at most PREVIEW_CELLS cells along the longer side, exactly as the sampler builds it."""
    info = read_info(cache_path)
    layers = LayerChoice.resolve(params, info, cache_path)
    image = read_image(cache_path, image_id)
    views = split_views(image.placement)
    values = token_values(image.instances[gt_id].maps[None], layers.rows, layers.weights, views, params.view_norm)
    grid = Grid.over(0, 0, image.width, image.height, PREVIEW_CELLS)
    return paint(values, views, grid, params.view_weights)[0]


def _load_rgb(path: Path, image_id: int) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read image {image_id} for the preview ({e})") from e


def write_previews(
    cache_path: str | os.PathLike, dataset: AmodalDataset, table: pa.Table, params: SampleParams,
    n: int, out_dir: str | os.PathLike, smoke: bool,
) -> list[Path]:
    """PNGs for the first `n` instances of the points `table` (dataset order) into `out_dir`."""
    out_dir = Path(out_dir)
    records = {im.id: im for im in dataset.images}
    d = table.select(["image_id", "gt_id", "x", "y", "label", "source", "fallback"]).to_pydict()
    keys = list(dict.fromkeys(zip(d["image_id"], d["gt_id"])))[:n]
    written = []
    for image_id, gt_id in keys:
        record = records[image_id]
        inst = next(i for i in record.instances if i.id == gt_id)
        rows = [i for i, k in enumerate(zip(d["image_id"], d["gt_id"])) if k == (image_id, gt_id)]
        rgb = _load_rgb(record.path, image_id)
        heat = instance_map(cache_path, image_id, gt_id, params)
        fig, ax = plt.subplots(figsize=(7, 7 * record.height / record.width))
        ax.imshow(rgb)
        ax.imshow(heat, cmap="jet", alpha=0.45, extent=(0, record.width, record.height, 0))
        x, y, w, h = inst.bbox
        ax.add_patch(Rectangle((x, y), w, h, fill=False, ec="yellow", lw=1.5))
        rx0, ry0, rx1, ry1 = search_region(inst.bbox, record.width, record.height, params.box_enlarge)
        if params.box_enlarge > 1:
            ax.add_patch(Rectangle((rx0, ry0), rx1 - rx0, ry1 - ry0, fill=False, ec="yellow", lw=1, ls="--"))
        for i in rows:
            positive = d["label"][i] == 1
            ax.scatter(d["x"][i], d["y"][i], s=120, marker="*" if positive else "X",
                       c="lime" if positive else "red", edgecolors="black", linewidths=0.8, zorder=3)
        fallback = d["fallback"][rows[0]]
        title = f"image {image_id} / instance {gt_id}: {inst.category_name}"
        if fallback:
            title += f"  [fallback: {fallback}]"
        if smoke:
            title = f"{SMOKE_BANNER}\n{title}"
        ax.set_title(title, fontsize=9, color="red" if smoke else "black")
        ax.set_axis_off()
        path = out_dir / f"sample_{image_id}_{gt_id}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written
