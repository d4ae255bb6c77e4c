"""Synthetic D2SA-format datasets: scenes -> COCO JSON (amodal + visible RLE, occluder ids) + images.

Annotation file `D2S_amodal_synth.json` (D2SA schema, read by `load_dataset(..., "d2sa")`):
    images        id, file_name ('images/synth_000001.jpg', relative to the JSON's folder),
                  width, height
    annotations   id, image_id, category_id, bbox (amodal XYWH), area (amodal pixels),
                  segmentation (amodal RLE, str counts), visible_mask (RLE), occlude_rate,
                  occluder_ids (ids of the instances in front that cover part of it), iscrowd 0
    categories    id, name, supercategory
    info          generator, seed, config
Every image is drawn from its own RNG seeded by (seed, image id), so a seed fixes the output
byte for byte.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from tqdm import tqdm

from pipeline import masks
from pipeline.atomic import atomic_path, write_json
from pipeline.synth.categories import CATEGORIES
from pipeline.synth.scene import SceneConfig, layout, render, rigid_catalogue

ANNOTATION_NAME = "D2S_amodal_synth.json"
IMAGE_FORMATS = ("jpg", "png")
JPEG_QUALITY = 95


@dataclass(frozen=True)
class SynthScene:
    """One generated image: its COCO `images` entry, its annotations and its pixels (RGB)."""

    image: dict
    annotations: list[dict]
    rgb: np.ndarray


def _annotations(objects, image_id: int, first_id: int) -> list[dict]:
    ids = [first_id + k for k in range(len(objects))]
    anns = []
    for k, obj in enumerate(objects):
        amodal_area = int(obj.amodal.sum())
        anns.append({
            "id": ids[k],
            "image_id": image_id,
            "category_id": obj.category.id,
            "bbox": list(obj.bbox),
            "area": amodal_area,
            "segmentation": masks.encode(obj.amodal),
            "visible_mask": masks.encode(obj.visible),
            "occlude_rate": round(1.0 - int(obj.visible.sum()) / amodal_area, 6),
            "occluder_ids": [ids[i] for i in obj.occluders],
            "iscrowd": 0,
        })
    return anns


def iter_scenes(
    n_images: int, seed: int = 0, config: SceneConfig = SceneConfig(), image_format: str = "jpg",
    pixels: bool = True,
) -> Iterator[SynthScene]:
    """Generate scenes one at a time (image ids 1..n, annotation ids running from 1).

    pixels=False skips painting (`rgb` is None; the annotations are the same)."""
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    next_id = 1
    rigid = rigid_catalogue(seed, config) if config.world == "rigid" else None
    for image_id in range(1, n_images + 1):
        rng = np.random.default_rng([seed, image_id])
        objects = layout(config, rng, rigid)
        rgb = render(objects, config, rng) if pixels else None
        image = {"id": image_id, "file_name": f"images/synth_{image_id:06d}.{image_format}",
                 "width": config.width, "height": config.height}
        anns = _annotations(objects, image_id, next_id)
        next_id += len(anns)
        yield SynthScene(image, anns, rgb)


def coco_dict(images: list[dict], annotations: list[dict], seed: int, config: SceneConfig) -> dict:
    """The annotation file's content."""
    return {
        "info": {"description": "synthetic D2SA-format amodal scenes", "generator": "vlmsam synth",
                 "seed": seed, "config": dataclasses.asdict(config)},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c.id, "name": c.name, "supercategory": c.supercategory}
                       for c in CATEGORIES],
    }


def synth_coco(
    n_images: int, seed: int = 0, width: int = 640, height: int = 480, pixels: bool = True, **config
) -> tuple[dict, list[np.ndarray]]:
    """In memory, no disk: (annotation dict, RGB images in image-id order; None each with
    pixels=False)."""
    cfg = SceneConfig(width=width, height=height, **config)
    scenes = list(iter_scenes(n_images, seed, cfg, pixels=pixels))
    data = coco_dict([s.image for s in scenes], [a for s in scenes for a in s.annotations], seed, cfg)
    return data, [s.rgb for s in scenes]


def _encode(rgb: np.ndarray, image_format: str) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if image_format == "jpg" else []
    ok, buf = cv2.imencode(f".{image_format}", np.ascontiguousarray(rgb[..., ::-1]), params)
    if not ok:
        raise RuntimeError(f"cv2 could not encode a {image_format} image")
    return buf.tobytes()


def generate(
    out_dir: str | os.PathLike,
    n_images: int,
    seed: int = 0,
    width: int = 640,
    height: int = 480,
    image_format: str = "jpg",
    progress: bool = True,
    **config,
) -> Path:
    """Write `n_images` scenes under `out_dir` (images in `out_dir/images/`, annotations in
    `out_dir/D2S_amodal_synth.json`, both written atomically); returns the annotation path.

    `config` overrides further SceneConfig fields (mean_instances, size_range, ...).
    """
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    cfg = SceneConfig(width=width, height=height, **config)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    scenes = iter_scenes(n_images, seed, cfg, image_format)
    for scene in tqdm(scenes, total=n_images, desc="synth scenes", unit="img", disable=not progress):
        with atomic_path(out / scene.image["file_name"]) as tmp:
            tmp.write_bytes(_encode(scene.rgb, image_format))
        images.append(scene.image)
        annotations.extend(scene.annotations)
    path = out / ANNOTATION_NAME
    write_json(path, coco_dict(images, annotations, seed, cfg), indent=None)
    return path
