"""Synthetic attention caches built from ground truth, for the sampler's tests and benchmark.

A scene is a few ellipses stacked in depth (later ones in front); each instance's attention
is Gaussian blobs on its VISIBLE part plus weaker distractor blobs on its occluders and on the
background, plus noise, evaluated at the centres of LLaVA-NeXT-like tokens: a coarse base view
(24 x 24 over the whole image) and a fine high-resolution view. Caches written from these
scenes are SMOKE caches (`smoke=True`): they test the sampler, they are not results.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from pipeline import masks
from pipeline.attention.cache import (
    VIEW_BASE, VIEW_HIGHRES, AttentionCacheWriter, CacheInfo, ImageAttention, InstanceAttention,
    TokenPlacement,
)
from pipeline.datasets.record import AmodalDataset, ImageRecord, Instance

CATEGORY = "object"


def grid_placement(width: int, height: int, base: int = 24, fine: tuple[int, int] = (36, 48)) -> TokenPlacement:
    """LLaVA-NeXT-like tokens: a base grid `base` x `base` over the whole image (view 0), then a
    fine grid of `fine` = (rows, cols) over the whole image (view 1, padding rows removed)."""
    views, rows, cols, rects = [], [], [], []
    for view, (nr, nc) in ((VIEW_BASE, (base, base)), (VIEW_HIGHRES, fine)):
        r, c = np.divmod(np.arange(nr * nc), nc)
        sx, sy = width / nc, height / nr
        rects.append(np.stack([c * sx, r * sy, (c + 1) * sx, (r + 1) * sy], 1))
        views.append(np.full(nr * nc, view, np.int8))
        rows.append(r)
        cols.append(c)
    return TokenPlacement(
        np.concatenate(views), np.concatenate(rows).astype(np.int32),
        np.concatenate(cols).astype(np.int32), np.concatenate(rects).astype(np.float32),
    )


@dataclass
class Scene:
    """Ground truth of one synthetic image: per instance id its masks, box and occluders."""

    width: int
    height: int
    amodal: dict[int, np.ndarray]  # bool [H, W]
    visible: dict[int, np.ndarray]
    occluders: dict[int, list[int]]
    _pixels: dict = field(default_factory=dict, repr=False)

    def pixels(self, gt_id: int | None) -> np.ndarray:
        """(x, y) pixel centres [n, 2] of the visible part of `gt_id`, or of the background
        (no object) for None; computed once per scene."""
        if gt_id not in self._pixels:
            if gt_id is None:
                anywhere = np.zeros((self.height, self.width), bool)
                for m in self.amodal.values():
                    anywhere |= m
                mask = ~anywhere
            else:
                mask = self.visible[gt_id]
            ys, xs = np.nonzero(mask)
            self._pixels[gt_id] = np.stack([xs + 0.5, ys + 0.5], 1).astype(np.float64)
        return self._pixels[gt_id]

    @classmethod
    def from_record(cls, record: ImageRecord) -> "Scene":
        """A scene from a dataset record's masks; occluders from the record when it lists them,
        else the instances whose amodal mask covers a hidden part of the object."""
        amodal = {i.id: masks.decode(i.amodal_rle) for i in record.instances}
        visible = {i.id: masks.decode(i.visible_rle) for i in record.instances}
        occluders = {}
        for i in record.instances:
            if i.occluder_ids is not None:
                occluders[i.id] = list(i.occluder_ids)
            else:
                hidden = amodal[i.id] & ~visible[i.id]
                occluders[i.id] = [g for g in amodal if g != i.id and (amodal[g] & hidden).any()]
        return cls(record.width, record.height, amodal, visible, occluders)

    def box(self, gt_id: int) -> tuple[float, float, float, float]:
        ys, xs = np.nonzero(self.amodal[gt_id])
        return float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())


def patch_placement(width: int, height: int, side: int) -> TokenPlacement:
    """Single-view tokens (Qwen2-VL, Qwen3-VL, ...): a grid of `side`-px tokens over the image
    (view 0), the last row and column cut at the image border."""
    nr, nc = -(-height // side), -(-width // side)
    r, c = np.divmod(np.arange(nr * nc), nc)
    rects = np.stack([c * side, r * side, np.minimum((c + 1) * side, width), np.minimum((r + 1) * side, height)], 1)
    return TokenPlacement(np.full(nr * nc, VIEW_BASE, np.int8), r.astype(np.int32), c.astype(np.int32),
                          rects.astype(np.float32))


def _ellipse(rng: np.random.Generator, width: int, height: int, size: tuple[float, float]) -> np.ndarray:
    m = np.zeros((height, width), np.uint8)
    axes = (int(rng.uniform(*size) * width), int(rng.uniform(*size) * height))
    centre = (int(rng.uniform(0.15, 0.85) * width), int(rng.uniform(0.15, 0.85) * height))
    cv2.ellipse(m, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return m.astype(bool)


def _layered(amodal: dict[int, np.ndarray], width: int, height: int) -> Scene:
    """The scene of amodal masks stacked in depth in dict order (later ones in front)."""
    ids = list(amodal)
    visible, occluders = {}, {}
    for i, gt in enumerate(ids):
        above = [g for g in ids[i + 1:] if (amodal[g] & amodal[gt]).any()]
        cover = np.zeros((height, width), bool)
        for g in above:
            cover |= amodal[g]
        visible[gt] = amodal[gt] & ~cover
        occluders[gt] = above
    return Scene(width, height, amodal, visible, occluders)


def random_scene(
    rng: np.random.Generator, width: int, height: int, n_objects: int, first_id: int,
    size: tuple[float, float] = (0.08, 0.22),
) -> Scene:
    """Ellipses in depth order (later ones in front); each keeps >= 25% of itself visible.
    `size`: range of the semi-axes as fractions of the image width and height."""
    ids = list(range(first_id, first_id + n_objects))
    for _ in range(1000):
        scene = _layered({gt: _ellipse(rng, width, height, size) for gt in ids}, width, height)
        if all(scene.visible[g].sum() >= 0.25 * scene.amodal[g].sum() for g in ids):
            return scene
    raise RuntimeError(f"no scene of {n_objects} objects with >= 25% visible each in 1000 draws")


def occluded_scene(
    rng: np.random.Generator, width: int, height: int, n_pairs: int, first_id: int,
    visible: float = 0.1, size: tuple[float, float] = (0.06, 0.12),
) -> Scene:
    """Heavy occlusion: `n_pairs` pairs, each an ellipse and, in front of it, a slightly larger
    copy shifted so that about `visible` of the back one stays visible (a crescent); the pairs
    sit in side-by-side strips of the image."""
    amodal: dict[int, np.ndarray] = {}
    strip = width / n_pairs
    for k in range(n_pairs):
        ax = int(rng.uniform(*size) * width)
        ay = int(rng.uniform(*size) * height)
        cx = int(strip * (k + 0.5) + rng.uniform(-0.1, 0.1) * strip)
        cy = int(rng.uniform(0.3, 0.7) * height)
        angle, direction = float(rng.uniform(0, 180)), rng.uniform(0, 2 * np.pi)
        back = np.zeros((height, width), np.uint8)
        cv2.ellipse(back, (cx, cy), (ax, ay), angle, 0, 360, 1, -1)
        back = back.astype(bool)
        lo, hi = 0.0, 1.0  # shift as a fraction of the larger axis, bisected on the visible share
        for _ in range(12):
            mid = (lo + hi) / 2
            front = np.zeros((height, width), np.uint8)
            shift = mid * max(ax, ay)
            cv2.ellipse(front, (int(cx + shift * np.cos(direction)), int(cy + shift * np.sin(direction))),
                        (int(ax * 1.1), int(ay * 1.1)), angle, 0, 360, 1, -1)
            share = (back & ~front.astype(bool)).sum() / back.sum()
            lo, hi = (mid, hi) if share < visible else (lo, mid)
        amodal[first_id + 2 * k] = back
        amodal[first_id + 2 * k + 1] = front.astype(bool)
    return _layered(amodal, width, height)


def _centres(placement: TokenPlacement) -> np.ndarray:
    rect = np.asarray(placement.rect, np.float64)
    return np.stack([(rect[:, 0] + rect[:, 2]) / 2, (rect[:, 1] + rect[:, 3]) / 2], 1)


def _blobs(centres: np.ndarray, points: np.ndarray, sigma: float, amp: float) -> np.ndarray:
    d2 = ((centres[:, None, :] - points[None, :, :]) ** 2).sum(-1)
    return amp * np.exp(-d2 / (2 * sigma**2)).sum(1)


def _pick(rng: np.random.Generator, pixels: np.ndarray, n: int) -> np.ndarray:
    return pixels[rng.integers(0, pixels.shape[0], n)]


def scene_attention(
    scene: Scene, placement: TokenPlacement, rng: np.random.Generator, n_layers: int = 2,
    distractor: float = 0.5, background: float = 0.35, noise: float = 0.08,
) -> dict[int, np.ndarray]:
    """Per instance: maps [n_layers, T] (attention-like: non-negative, summing to 0.5)."""
    centres = _centres(placement)
    bg = scene.pixels(None)
    out = {}
    for gt in scene.visible:
        vis = scene.pixels(gt)
        sigma = 0.3 * np.sqrt(vis.shape[0])
        layers = []
        for _ in range(n_layers):
            v = _blobs(centres, _pick(rng, vis, 3), sigma, 1.0)
            for occ in scene.occluders[gt]:
                v += _blobs(centres, _pick(rng, scene.pixels(occ), 1), sigma, distractor)
            if bg.shape[0]:
                v += _blobs(centres, _pick(rng, bg, 2), sigma, background)
            v = np.maximum(v + noise * rng.standard_normal(v.shape) * v.max(), 0)
            layers.append(0.5 * v / v.sum())
        out[gt] = np.stack(layers).astype(np.float32)
    return out


def scene_record(scene: Scene, image_id: int, image_path: Path) -> ImageRecord:
    """The dataset record of a scene (real RLEs of its masks)."""
    insts = []
    for gt in scene.amodal:
        a, v = scene.amodal[gt], scene.visible[gt]
        insts.append(Instance(
            id=gt, category_id=1, category_name=CATEGORY, bbox=scene.box(gt),
            amodal_rle=masks.encode(a), visible_rle=masks.encode(v),
            occlusion_rate=float(1 - v.sum() / a.sum()), occluder_ids=tuple(scene.occluders[gt]),
        ))
    return ImageRecord(image_id, image_path, scene.width, scene.height, tuple(insts))


def cache_info(layers=(14, 20)) -> CacheInfo:
    """Provenance of a synthetic cache: marked smoke."""
    return CacheInfo(
        model_id="synthetic-attention", model_revision="", prompt_templates={"target": "{name}"},
        layers=list(layers), params={"synthetic": True, "extract": {"layers": list(layers)}}, smoke=True,
    )


def write_cache(
    path: str | os.PathLike, scenes: dict[int, Scene], seed: int = 0, fine: tuple[int, int] = (36, 48),
    category_names: dict[int, str] | None = None,
) -> Path:
    """Write a SMOKE attention cache for `scenes` (image id -> Scene) with the real writer."""
    rng = np.random.default_rng(seed)
    info = cache_info()
    writer = AttentionCacheWriter(path, info)
    for image_id, scene in scenes.items():
        placement = grid_placement(scene.width, scene.height, fine=fine)
        maps = scene_attention(scene, placement, rng, n_layers=len(info.layers))
        names = category_names or {}
        instances = {
            gt: InstanceAttention(gt, names.get(gt, CATEGORY), f"the {names.get(gt, CATEGORY)}",
                                  [names.get(gt, CATEGORY)], maps[gt],
                                  occluder_names=[names.get(o, CATEGORY) for o in scene.occluders[gt]],
                                  occluder_ids=list(scene.occluders[gt]))
            for gt in scene.amodal
        }
        writer.write_image(ImageAttention(image_id, scene.width, scene.height, placement, instances))
    writer.finalize(list(scenes))
    return Path(path)


def cache_for_dataset(path: str | os.PathLike, dataset: AmodalDataset, seed: int = 0) -> tuple[Path, dict[int, Scene]]:
    """A SMOKE attention cache built from a loaded dataset's ground-truth masks."""
    scenes = {im.id: Scene.from_record(im) for im in dataset.images if im.instances}
    names = {i.id: i.category_name for im in dataset.images for i in im.instances}
    return write_cache(path, scenes, seed, category_names=names), scenes


def write_synthetic_cache(
    directory: str | os.PathLike, n_images: int, seed: int = 0, width: int = 480, height: int = 360,
    n_objects: int = 4, fine: tuple[int, int] = (36, 48),
) -> tuple[Path, AmodalDataset, dict[int, Scene]]:
    """Scenes -> (cache path, dataset of their records, scenes by image id) under `directory`."""
    directory = Path(directory)
    rng = np.random.default_rng(seed)
    scenes = {
        image_id: random_scene(rng, width, height, n_objects, first_id=image_id * 100)
        for image_id in range(1, n_images + 1)
    }
    path = write_cache(directory / "attention.h5", scenes, seed + 1, fine)
    records = tuple(scene_record(s, i, directory / f"{i}.png") for i, s in scenes.items())
    dataset = AmodalDataset("synthetic-attention", directory / "annotations.json", records, {1: CATEGORY})
    return path, dataset, scenes
