"""The sample stage: attention cache + dataset boxes -> `cache/points.parquet`.

Reads the cache image by image (never the VLM), samples every dataset instance's points on
its search grid and writes one row per point (`points_schema`) atomically, with the sample
parameters, their hash, the cache's smoke flag and provenance in the file metadata.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from pipeline.attention.cache import CacheInfo, ImageAttention, image_ids, read_images, read_info
from pipeline.datasets.record import AmodalDataset, ImageRecord
from pipeline.errors import VlmsamError
from pipeline.sampling.params import SampleParams
from pipeline.sampling.pixel_map import (
    Grid, ViewTokens, finest_token_side, finest_view, paint, search_region, split_views, token_values,
)
from pipeline.sampling.points import EXTRACT_PREFIX, InstancePoints, fallback_points, sample_points, snap_positives
from pipeline.sampling.points_schema import write_points

log = logging.getLogger("vlmsam.sample")


class SampleInputError(VlmsamError, ValueError):
    """Cache and dataset do not fit together; the message names both files and the record."""


@dataclass
class SampleSummary:
    """What a run produced."""

    images: int = 0
    instances: int = 0
    points: int = 0
    fallbacks: Counter = field(default_factory=Counter)  # reason -> instances
    skipped_cache_images: int = 0  # images of the cache that the dataset does not list
    smoke: bool = False


@dataclass(frozen=True)
class LayerChoice:
    """Rows of the cache's `maps` to use and their weights."""

    rows: list[int]
    weights: np.ndarray

    @classmethod
    def resolve(cls, params: SampleParams, info: CacheInfo, cache_path) -> "LayerChoice":
        """Map `params.layers` onto the cache's stored layers; a clear error for absent ones.

        A layer may be named by its stored number or as extract.layers wrote it (e.g. -8): the
        cache's params hold that list under ["extract"]["layers"], resolved in order to the
        stored layers.
        """
        stored = list(info.layers)
        alias = {l: l for l in stored}
        extract = info.params.get("extract") if isinstance(info.params, dict) else None
        written = extract.get("layers") if isinstance(extract, dict) else None
        if isinstance(written, list) and len(written) == len(stored):
            alias.update({w: l for w, l in zip(written, stored) if isinstance(w, int)})
        layers = list(params.layers) if params.layers is not None else stored
        absent = [l for l in layers if l not in alias]
        if absent:
            raise SampleInputError(
                f"{cache_path}: sample.layers {absent} are not in the attention cache, "
                f"which stores layers {stored}" + (f" (extract.layers {written})" if written else "")
            )
        weights = params.layer_weights if params.layer_weights is not None else [1.0] * len(layers)
        return cls([stored.index(alias[l]) for l in layers], np.asarray(weights, np.float64))


def sample_image(
    image: ImageAttention, record: ImageRecord, params: SampleParams, layers: LayerChoice,
    where: str = "", timings: Counter | None = None, views: list[ViewTokens] | None = None,
) -> dict[int, InstancePoints]:
    """Points of every instance of `record` (dataset order) from the cache's `image`.

    `timings`, when given, accumulates seconds spent in 'upsample' and 'peaks'. `views`: the
    image's `split_views(image.placement)`, when the caller has it (images of one size share it).
    """
    clock = time.perf_counter()
    timings = Counter() if timings is None else timings
    views = split_views(image.placement) if views is None else views
    gt_ids = list(image.instances)
    row_of = {g: i for i, g in enumerate(gt_ids)}
    maps = np.stack([np.asarray(image.instances[g].maps) for g in gt_ids])  # [N, L, T]
    values = token_values(maps, layers.rows, layers.weights, views, params.view_norm)
    finite = np.isfinite(values).all(axis=1)
    fine_side = finest_token_side(views)
    fine = finest_view(views)

    out: dict[int, InstancePoints] = {}
    for inst in record.instances:
        att = image.instances[inst.id]
        if att.fallback:
            out[inst.id] = fallback_points(inst.bbox, EXTRACT_PREFIX + att.fallback)
            continue
        i = row_of[inst.id]
        if not finite[i]:
            out[inst.id] = fallback_points(inst.bbox, "nan")
            continue
        occ_rows = []
        # occluder maps veto positives and give occluder negatives
        for occ_id in att.occluder_ids:
            if occ_id == inst.id:
                continue  # an object does not occlude itself
            if occ_id not in row_of:
                raise SampleInputError(
                    f"{where}image {image.image_id} instance {inst.id}: occluder id {occ_id} "
                    f"has no map in the cache (instances there: {gt_ids})"
                )
            if finite[row_of[occ_id]] and not image.instances[occ_id].fallback:
                occ_rows.append(row_of[occ_id])  # maps extract flagged give no negatives
        rival_rows = []
        if params.contrast == "same_category":  # every look-alike of the image
            rival_rows = [row_of[o.id] for o in record.instances if o.id != inst.id
                          and o.id not in att.occluder_ids and o.category_name == inst.category_name
                          and finite[row_of[o.id]] and not image.instances[o.id].fallback]
        grid = Grid.over(*search_region(inst.bbox, image.width, image.height, params.box_enlarge),
                         params.max_cells)
        own_and_others = values[[i, *occ_rows, *rival_rows]]  # [1 + occluders + rivals, T]
        painted = paint(own_and_others, views, grid, params.view_weights)
        now = time.perf_counter()
        timings["upsample"] += now - clock
        sigma_cells = params.smooth * fine_side / grid.step
        k = 1 + len(occ_rows)
        out[inst.id] = sample_points(painted[0], list(painted[1:k]), grid, inst.bbox, params, sigma_cells,
                                     [float(values[r].max()) for r in occ_rows], list(painted[k:]))
        if params.snap:
            fine_values = own_and_others[:, fine.index]
            out[inst.id] = snap_positives(out[inst.id], fine.rect, fine_values[0], fine_values[1:], inst.bbox,
                                          params.pos_margin)
        clock = time.perf_counter()
        timings["peaks"] += clock - now
    return out


class _Columns:
    """Accumulates the points table column by column."""

    def __init__(self):
        self.parts: dict[str, list] = {n: [] for n in ("image_id", "gt_id", "rank", "x", "y", "label", "score")}
        self.source: list[str] = []
        self.fallback: list[str] = []

    def add(self, image_id: int, gt_id: int, pts: InstancePoints) -> None:
        n = len(pts)
        self.parts["image_id"].append(np.full(n, image_id, np.int64))
        self.parts["gt_id"].append(np.full(n, gt_id, np.int64))
        self.parts["rank"].append(np.arange(n, dtype=np.int16))
        self.parts["x"].append(pts.x.astype(np.float32))
        self.parts["y"].append(pts.y.astype(np.float32))
        self.parts["label"].append(pts.label)
        self.parts["score"].append(pts.score)
        self.source.extend(pts.source)
        self.fallback.extend([pts.fallback] * n)

    def table(self, params_hash: str) -> pa.Table:
        dtypes = {"image_id": np.int64, "gt_id": np.int64, "rank": np.int16, "x": np.float32,
                  "y": np.float32, "label": np.int8, "score": np.float32}
        cols = {k: np.concatenate(v) if v else np.zeros(0, dtypes[k]) for k, v in self.parts.items()}
        cols["source"] = self.source
        cols["fallback"] = self.fallback
        cols["params_hash"] = [params_hash] * len(self.source)
        return pa.table(cols)


def points_table(image_id: int, gt_ids, points: dict[int, InstancePoints], params_hash: str) -> pa.Table:
    """The rows of one image's points in the points-file layout (`points_schema`), in memory
    (single-image mode builds the decoder's `PointIndex` from them, as the stage's file does)."""
    columns = _Columns()
    for gt_id in gt_ids:
        columns.add(image_id, gt_id, points[gt_id])
    return columns.table(params_hash)


def points_metadata(params: SampleParams, info: CacheInfo, cache_path) -> dict:
    """The `vlmsam` metadata of the points file (see points_schema)."""
    return {
        "params": params.to_dict(),
        "params_hash": params.hash,
        "smoke": bool(info.smoke),
        "cache": {
            "path": str(cache_path),
            "model_id": info.model_id,
            "model_revision": info.model_revision,
            "layers": list(info.layers),
            "params_hash": info.params_hash,
        },
    }


CHUNK_IMAGES = 32  # images per unit of work (one open of the cache; one task of a worker process)
MAX_AUTO_WORKERS = 8  # `workers="auto"` never starts more processes than this


def resolve_workers(workers: int | str, n_images: int) -> int:
    """The number of processes for `workers`: a positive int as given, or "auto": one per CPU
    core this process may use, at most MAX_AUTO_WORKERS and one per chunk of CHUNK_IMAGES images
    (a small dataset is sampled in this process, without starting any)."""
    if workers == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, min(cores, MAX_AUTO_WORKERS, -(-n_images // CHUNK_IMAGES)))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer or 'auto', got {workers!r}")
    return workers


def parse_workers(text: str) -> int | str:
    """A command line's --workers value: 'auto' or a positive integer (ValueError otherwise)."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"--workers must be a positive integer or 'auto', got {text!r}")
    return value


def _sample_chunk(job) -> tuple[list[tuple[int, dict[int, InstancePoints]]], Counter]:
    """Sample the images of one chunk (in order) from one open cache: the unit of work of the
    sequential loop and of each worker process."""
    cache_path, records, params, where = job
    info = read_info(cache_path)
    layers = LayerChoice.resolve(params, info, cache_path)
    timings: Counter = Counter()
    out = []
    views_of: dict[bytes, list[ViewTokens]] = {}  # placement -> its views (one per image size)
    # one thread: the per-instance arrays are small, and OpenMP/BLAS thread pools (KMeans)
    # cost far more than they give on them (measured 40x slower KMeans on a loaded 2-core box)
    with threadpool_limits(1):
        images = read_images(cache_path, [r.id for r in records], with_words=False)
        for record in records:
            clock = time.perf_counter()
            image = next(images)
            timings["read"] += time.perf_counter() - clock
            _check_image(image, record, layers, info, where)
            p = image.placement
            key = b"".join(np.ascontiguousarray(a).tobytes() for a in (p.view, p.row, p.col, p.rect))
            views = views_of.get(key) or views_of.setdefault(key, split_views(p))
            out.append((record.id, sample_image(image, record, params, layers, where, timings, views)))
    return out, timings


def sample_cache(
    cache_path: str | os.PathLike, dataset: AmodalDataset, params: SampleParams, progress: bool = True,
    timings: Counter | None = None, workers: int | str = 1,
) -> tuple[pa.Table, dict, SampleSummary]:
    """Sample every instance of `dataset` from the cache: (points table, metadata, summary).

    Every dataset image with instances must be in the cache with all its instances
    (SampleInputError naming both files otherwise); cache images the dataset does not list
    are skipped and counted. `workers` > 1 spreads the images over that many processes (the
    output is the same); "auto" chooses the number (`resolve_workers`). `timings`, when given,
    accumulates seconds per part ('read', 'upsample', 'peaks'; summed over workers).
    """
    timings = Counter() if timings is None else timings
    cache_path = Path(cache_path)
    info = read_info(cache_path)
    if info.smoke:
        log.warning("SMOKE: %s was made with random VLM weights (%s); the points are not a result",
                    cache_path, info.model_id)
    LayerChoice.resolve(params, info, cache_path)  # fail early on absent layers
    resolve_workers(workers, 0)  # fail early on a bad value
    records = {im.id: im for im in dataset.images if im.instances}
    where = f"{cache_path} / {dataset.annotation_file}: "
    in_cache = image_ids(cache_path)
    stored = set(in_cache)
    missing = [i for i in records if i not in stored]
    if missing:
        raise SampleInputError(
            f"{where}{len(missing)} dataset image(s) with instances are not in the attention cache, "
            f"e.g. image ids {missing[:10]} (re-run extract for this dataset)"
        )
    order = [records[i] for i in in_cache if i in records]  # the cache's order: sequential reads
    summary = SampleSummary(smoke=info.smoke, skipped_cache_images=len(in_cache) - len(order))
    if summary.skipped_cache_images:
        log.info("%s: %d cache image(s) not in %s are skipped", cache_path,
                 summary.skipped_cache_images, dataset.annotation_file)
    jobs = [(cache_path, order[i:i + CHUNK_IMAGES], params, where) for i in range(0, len(order), CHUNK_IMAGES)]
    workers = resolve_workers(workers, len(order))
    log.info("sampling %d images in %d process(es)", len(order), workers)
    columns = _Columns()
    with tqdm(total=len(order), desc="sample", unit="img", disable=not progress) as bar:
        if workers > 1:
            pool = multiprocessing.get_context("spawn").Pool(workers)
            results = pool.imap(_sample_chunk, jobs)  # in order: the output does not depend on workers
        else:
            pool, results = None, map(_sample_chunk, jobs)
        try:
            for chunk, chunk_timings in results:
                timings.update(chunk_timings)
                for image_id, points in chunk:
                    for gt_id, pts in points.items():
                        columns.add(image_id, gt_id, pts)
                        summary.points += len(pts)
                        if pts.fallback:
                            summary.fallbacks[pts.fallback] += 1
                    summary.images += 1
                    summary.instances += len(points)
                bar.update(len(chunk))
        finally:
            if pool is not None:
                pool.terminate()
    return columns.table(params.hash), points_metadata(params, info, cache_path), summary


def _check_image(image: ImageAttention, record: ImageRecord, layers: LayerChoice, info: CacheInfo, where: str):
    if (image.width, image.height) != (record.width, record.height):
        raise SampleInputError(
            f"{where}image {record.id}: size {image.width}x{image.height} in the cache, "
            f"{record.width}x{record.height} in the dataset"
        )
    for inst in record.instances:
        if inst.id not in image.instances:
            raise SampleInputError(
                f"{where}image {record.id} instance {inst.id} ({inst.category_name}) is in the dataset "
                f"but not in the attention cache (re-run extract)"
            )
    for gt_id, att in image.instances.items():
        if att.maps.ndim != 2 or att.maps.shape[0] != len(info.layers):
            raise SampleInputError(
                f"{where}image {record.id} instance {gt_id}: maps shape {att.maps.shape}, "
                f"expected [{len(info.layers)} layers, tokens]"
            )


def run_sample(
    cache_path: str | os.PathLike, dataset: AmodalDataset, out_path: str | os.PathLike,
    params: SampleParams, progress: bool = True, timings: Counter | None = None, workers: int | str = 1,
) -> SampleSummary:
    """The whole stage: sample and write `out_path` atomically (nothing is written on error).

    `timings`, when given, accumulates seconds per part: 'read', 'upsample', 'peaks', 'write'.
    """
    timings = Counter() if timings is None else timings
    table, metadata, summary = sample_cache(cache_path, dataset, params, progress, timings, workers)
    clock = time.perf_counter()
    write_points(out_path, table, metadata)
    timings["write"] += time.perf_counter() - clock
    log.info(
        "%s: %d points for %d instances of %d images; fallbacks %s%s", out_path, summary.points,
        summary.instances, summary.images, dict(summary.fallbacks) or "none",
        " [SMOKE]" if summary.smoke else "",
    )
    return summary
