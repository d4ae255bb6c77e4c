"""One synthetic scene: objects laid back to front with known amodal and visible masks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.synth.categories import CATEGORIES, Category
from pipeline.synth.shapes import outline, rasterise, silhouette

WORLDS = ("free", "rigid")
from pipeline.synth.textures import background, texture


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are drawn.

    width, height        image size in pixels
    mean_instances       mean objects per image (D2SA val: 15,654 / 3,600 = 4.35)
    max_instances        cap on objects per image
    size_range           object size as a fraction of min(width, height)
    max_occlusion        no object ends up more hidden than this (candidates that would push
                         an object beyond it are redrawn)
    min_visible_px       no object keeps fewer visible pixels than this
    max_tries            redraws of one candidate before it is dropped
    cluster_prob         chance that a new object is centred near an earlier one (products
                         piled together), else it is placed uniformly
    world                'free': every object a new random shape of its category's kind;
                         'rigid': each category ONE fixed silhouette and size (drawn from the
                         seed, `rigid_catalogue`), every instance of it that silhouette
                         rotated in the image plane, as products seen from above in D2S
    rigid_scale          rigid world: each instance scaled by a factor drawn uniformly from
                         this range ((1, 1): fixed camera height, every instance one size)
    """

    width: int = 640
    height: int = 480
    mean_instances: float = 4.35
    max_instances: int = 10
    size_range: tuple[float, float] = (0.22, 0.5)
    max_occlusion: float = 0.85
    min_visible_px: int = 64
    max_tries: int = 25
    cluster_prob: float = 0.6
    world: str = "free"
    rigid_scale: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        if self.world not in WORLDS:
            raise ValueError(f"world must be one of {WORLDS}, got {self.world!r}")
        if not 0 < self.rigid_scale[0] <= self.rigid_scale[1]:
            raise ValueError(f"rigid_scale must satisfy 0 < lo <= hi, got {self.rigid_scale}")
        if self.width < 32 or self.height < 32:
            raise ValueError(f"synthetic images must be at least 32x32, got {self.width}x{self.height}")
        lo, hi = self.size_range
        if not 0 < lo <= hi < 1:
            raise ValueError(f"size_range must satisfy 0 < lo <= hi < 1, got {self.size_range}")


@dataclass(frozen=True)
class PlacedObject:
    """An object in a scene: its category, crop origin, tight silhouette and full-frame masks."""

    category: Category
    x0: int
    y0: int
    silhouette: np.ndarray
    amodal: np.ndarray
    visible: np.ndarray
    occluders: tuple[int, ...]  # indices (in drawing order) of objects covering part of it

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        h, w = self.silhouette.shape
        return (float(self.x0), float(self.y0), float(w), float(h))


def _instance_count(cfg: SceneConfig, rng: np.random.Generator) -> int:
    return int(np.clip(1 + rng.poisson(cfg.mean_instances - 1), 1, cfg.max_instances))


def _place(parts, sw: int, sh: int, cfg: SceneConfig, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left corner of a sw x sh crop inside the image: near a random earlier object with
    probability cluster_prob, else uniform."""
    if parts and rng.random() < cfg.cluster_prob:
        _, px, py, psil = parts[int(rng.integers(len(parts)))]
        cx = px + psil.shape[1] / 2 + rng.normal(0, 0.35 * (psil.shape[1] + sw) / 2)
        cy = py + psil.shape[0] / 2 + rng.normal(0, 0.35 * (psil.shape[0] + sh) / 2)
        x0 = int(np.clip(round(cx - sw / 2), 0, cfg.width - sw))
        y0 = int(np.clip(round(cy - sh / 2), 0, cfg.height - sh))
        return x0, y0
    return int(rng.integers(0, cfg.width - sw + 1)), int(rng.integers(0, cfg.height - sh + 1))


@dataclass(frozen=True)
class RigidShape:
    """A category's one silhouette in the rigid world: a unit-radius polygon and its size as
    a fraction of min(width, height)."""

    polygon: np.ndarray
    size: float


def rigid_catalogue(seed: int, cfg: SceneConfig) -> dict[int, RigidShape]:
    """Each category's fixed silhouette, drawn from its own RNG seeded by (seed, category id)."""
    out = {}
    for cat in CATEGORIES:
        rng = np.random.default_rng([seed, 0, cat.id])
        pts = outline(cat.shape, rng)
        out[cat.id] = RigidShape(pts / np.linalg.norm(pts, axis=1).max(), float(rng.uniform(*cfg.size_range)))
    return out


def _silhouette(cat: Category, cfg: SceneConfig, rng: np.random.Generator,
                rigid: dict[int, RigidShape] | None) -> np.ndarray:
    short = min(cfg.height, cfg.width)
    if rigid is None:
        return silhouette(cat.shape, rng.uniform(*cfg.size_range) * short, rng)
    shape = rigid[cat.id]
    size = shape.size * short * rng.uniform(*cfg.rigid_scale)
    return rasterise(shape.polygon, rng.uniform(0, 2 * np.pi), size, fit_extent=False)


def layout(cfg: SceneConfig, rng: np.random.Generator,
           rigid: dict[int, RigidShape] | None = None) -> list[PlacedObject]:
    """Draw objects back to front; each new object is in front of all earlier ones.
    `rigid`: the rigid world's catalogue (None: free shapes).

    A candidate that would leave an earlier object with occlusion > max_occlusion or fewer
    than min_visible_px visible pixels is redrawn (new category, shape, place); after
    max_tries it is dropped. Masks are only touched inside the candidate's box.
    """
    h, w = cfg.height, cfg.width
    visibles: list[np.ndarray] = []
    visible_area: list[int] = []
    amodal_area: list[int] = []
    parts: list[tuple[Category, int, int, np.ndarray]] = []
    for _ in range(_instance_count(cfg, rng)):
        for _attempt in range(cfg.max_tries):
            cat = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
            sil = _silhouette(cat, cfg, rng, rigid)
            sh, sw = sil.shape
            if sh > h or sw > w:
                continue
            x0, y0 = _place(parts, sw, sh, cfg, rng)
            box = (slice(y0, y0 + sh), slice(x0, x0 + sw))
            lost = [int(np.count_nonzero(v[box] & sil)) for v in visibles]
            left = [a - l for a, l in zip(visible_area, lost)]
            if all(
                n >= cfg.min_visible_px and 1.0 - n / area <= cfg.max_occlusion
                for n, area in zip(left, amodal_area)
            ):
                for v in visibles:
                    v[box] &= ~sil
                visible = np.zeros((h, w), bool)
                visible[box] = sil
                visibles.append(visible)
                area = int(np.count_nonzero(sil))
                visible_area = left + [area]
                amodal_area.append(area)
                parts.append((cat, x0, y0, sil))
                break
    objects = []
    for j, (cat, x0, y0, sil) in enumerate(parts):
        amodal = np.zeros((h, w), bool)
        amodal[y0:y0 + sil.shape[0], x0:x0 + sil.shape[1]] = sil
        occluders = tuple(i for i in range(j + 1, len(parts)) if _overlap(parts[j], parts[i]))
        objects.append(PlacedObject(cat, x0, y0, sil, amodal, visibles[j], occluders))
    return objects


def _overlap(a: tuple, b: tuple) -> bool:
    """Whether two placed silhouettes share a pixel."""
    _, ax, ay, asil = a
    _, bx, by, bsil = b
    x0, y0 = max(ax, bx), max(ay, by)
    x1, y1 = min(ax + asil.shape[1], bx + bsil.shape[1]), min(ay + asil.shape[0], by + bsil.shape[0])
    if x0 >= x1 or y0 >= y1:
        return False
    return bool((asil[y0 - ay:y1 - ay, x0 - ax:x1 - ax] & bsil[y0 - by:y1 - by, x0 - bx:x1 - bx]).any())


def render(objects: list[PlacedObject], cfg: SceneConfig, rng: np.random.Generator) -> np.ndarray:
    """Paint the background then each object's texture through its silhouette, back to front;
    returns HxWx3 uint8 RGB."""
    canvas = background(cfg.height, cfg.width, rng)
    for obj in objects:
        sh, sw = obj.silhouette.shape
        tex = texture(obj.category, sh, sw, rng)
        region = canvas[obj.y0:obj.y0 + sh, obj.x0:obj.x0 + sw]
        region[obj.silhouette] = tex[obj.silhouette]
    return canvas
