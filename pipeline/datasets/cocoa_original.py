"""The original COCOA files (`COCO_amodal_{train,val,test}2014.json`, Zhu et al., CVPR 2017).

Unlike every other flavour, an annotation is one record **per image**:
    {"images": [COCO image entries: id, file_name, width, height, ...],
     "annotations": [{"author", "url", "image_id", "id", "size", "depth_constraint",
                      "regions": [region, ...]}, ...]}
and each region holds
    segmentation    the amodal mask: ONE flat polygon [x1, y1, x2, y2, ...]
    visible_mask    compressed RLE, present only on occluded regions (occlude_rate > 0);
                    elsewhere the visible mask is the amodal mask
    invisible_mask  compressed RLE, likewise (not needed: amodal - visible)
    name            free text (typos, trailing spaces): stripped, otherwise kept as written
    isStuff         0/1; stuff regions are left out unless `include_stuff`
    order           1-based depth order, 1 = front
    area, occlude_rate  the pixel count of the rasterised polygon and |invisible| / area
                    (recomputed from the masks here, like every flavour's occlusion rate)
There is no bbox, no category id and no region id, so:
    bbox         the tight box of the amodal mask (pycocotools `toBbox`)
    category     one id per distinct stripped name over the whole file (ids 1.. in sorted
                 name order, so the table does not depend on `max_images`)
    instance id  record id * REGION_ID_STRIDE + the region's index in `regions`
    occluders    the instances of the image with a smaller `order` whose amodal mask covers
                 part of this region's invisible part (amodal minus visible)
Records proved on real ones (../shared/reference/amodal_real_data/COCOA/deocclusion_demo,
tests/test_datasets_cocoa_original.py): pycocotools' rasterisation of the polygon is exactly
visible + invisible, and `area` is its pixel count.
A second record for an image already read is malformed (two annotators' regions would count
twice as ground truth), as is a region that breaks these rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from pipeline import masks
from pipeline.datasets.coco_json import (
    _int, check_image_files, mask_to_rle, occlusion_rate, parse_images, require, top_level_list,
)
from pipeline.datasets.record import AmodalDataset, DatasetError, ImageRecord, Instance

FLAVOUR = "cocoa_original"
REGION_ID_STRIDE = 1000  # instance id = record id * stride + region index


def looks_like(annotation_keys: set[str]) -> bool:
    """Per-image records holding a `regions` list."""
    return "regions" in annotation_keys


def region_name(region: Any) -> str | None:
    """The region's stripped free-text name, or None when it has none usable."""
    name = region.get("name") if isinstance(region, dict) else None
    return name.strip() if isinstance(name, str) and name.strip() else None


def _is_stuff(region: dict, where: str) -> bool:
    value = require(region, "isStuff", where)
    if value not in (0, 1) or isinstance(value, float):
        raise DatasetError(f"{where}: 'isStuff' must be 0 or 1, got {value!r}")
    return bool(value)


def category_table(records: list, include_stuff: bool) -> dict[int, str]:
    """id -> name over the distinct stripped names of every usable region of the file."""
    names = set()
    for rec in records:
        for region in (rec.get("regions") if isinstance(rec, dict) else None) or []:
            name = region_name(region)
            if name is not None and (include_stuff or region.get("isStuff") != 1):
                names.add(name)
    return {i + 1: name for i, name in enumerate(sorted(names))}


def _region(region: dict, index: int, record_id: int, height: int, width: int,
            category_ids: dict[str, int], where: str) -> tuple[Instance, int]:
    """One region -> (Instance without occluders, its depth order)."""
    polygon = require(region, "segmentation", where)
    if not (isinstance(polygon, list) and polygon and all(isinstance(v, (int, float)) for v in polygon)):
        raise DatasetError(f"{where}: 'segmentation' must be one flat polygon [x1, y1, x2, y2, ...]")
    amodal = mask_to_rle([polygon], height, width, f"{where} 'segmentation'")
    visible = (mask_to_rle(region["visible_mask"], height, width, f"{where} 'visible_mask'")
               if "visible_mask" in region else amodal)
    order = _int(require(region, "order", where), "order", where)
    name = region_name(region)
    if name is None:
        raise DatasetError(f"{where}: 'name' must be a non-empty string")
    bbox = tuple(float(v) for v in mask_utils.toBbox(masks.to_compressed(amodal)))
    instance = Instance(
        id=record_id * REGION_ID_STRIDE + index, category_id=category_ids[name], category_name=name,
        bbox=bbox, amodal_rle=amodal, visible_rle=visible,
        occlusion_rate=occlusion_rate(amodal, visible, where))
    return instance, order


def _with_occluders(instances: list[tuple[Instance, int]]) -> list[Instance]:
    """Occluders by depth order: instances in front whose amodal mask meets the hidden part."""
    from dataclasses import replace

    decoded = [(inst, order, masks.decode(inst.amodal_rle), masks.decode(inst.visible_rle))
               for inst, order in instances]
    out = []
    for inst, order, amodal, visible in decoded:
        hidden = amodal & ~visible
        ids = () if not hidden.any() else tuple(
            other.id for other, other_order, other_amodal, _ in decoded
            if other_order < order and (other_amodal & hidden).any())
        out.append(replace(inst, occluder_ids=ids))
    return out


def build(path: Path, data: dict, image_dir: Path, max_images: int | None, check_images: bool,
          on_error: str = "stop", include_stuff: bool = False) -> AmodalDataset:
    """An AmodalDataset from a parsed original COCOA file (images in file order).

    `on_error='skip'`: a malformed record or region is left out and listed in `skips`
    (pipeline/datasets/skips.py), the rest of its image kept."""
    from pipeline.datasets.skips import ANNOTATION_MALFORMED, Skip

    skips: list[Skip] = []

    def skip(error: DatasetError, image_id, annotation_id: int, instances: int = 1) -> None:
        if on_error == "stop":
            raise error
        skips.append(Skip("load", ANNOTATION_MALFORMED, str(path), image_id if isinstance(image_id, int) else None,
                          annotation_id, instances, str(error)))

    images = parse_images(data, path, image_dir)
    all_image_ids = {im.id for im in images}
    if max_images is not None:
        images = images[:max_images]
    by_id = {im.id: im for im in images}
    records = top_level_list(data, "annotations", path)
    category_ids = {name: cid for cid, name in category_table(records, include_stuff).items()}
    per_image: dict[int, list[tuple[Instance, int]]] = {im.id: [] for im in images}
    seen_images: set[int] = set()
    seen_records: set[int] = set()
    for i, rec in enumerate(tqdm(records, desc=f"reading {path.name}", unit="img", leave=False,
                                 disable=len(records) < 2000)):
        where = f"{path}: annotations[{i}]"
        iid = rec.get("image_id") if isinstance(rec, dict) else None
        try:
            rid = _int(require(rec, "id", where), "id", where)
            where = f"{path}: annotation id {rid}"
            if rid in seen_records:
                raise DatasetError(f"{where}: duplicate annotation id")
            seen_records.add(rid)
            iid = _int(require(rec, "image_id", where), "image_id", where)
            if iid not in all_image_ids:
                raise DatasetError(f"{where}: image_id {iid} is not in 'images'")
            if iid in seen_images:
                raise DatasetError(f"{where}: a second record for image {iid}")
            seen_images.add(iid)
            regions = require(rec, "regions", where)
            if not isinstance(regions, list):
                raise DatasetError(f"{where}: 'regions' must be a list")
            if len(regions) >= REGION_ID_STRIDE:
                raise DatasetError(f"{where}: {len(regions)} regions, more than ids allow ({REGION_ID_STRIDE - 1})")
        except DatasetError as e:
            regions = rec.get("regions") if isinstance(rec, dict) else None
            skip(e, iid, -1, len(regions) if isinstance(regions, list) and regions else 1)
            continue
        if iid not in by_id:  # beyond max_images
            continue
        image = by_id[iid]
        for j, region in enumerate(regions):
            region_where = f"{where} region {j}"
            try:
                if not isinstance(region, dict):
                    raise DatasetError(f"{region_where}: expected a JSON object")
                if _is_stuff(region, region_where) and not include_stuff:
                    continue
                per_image[iid].append(_region(region, j, rid, image.height, image.width, category_ids, region_where))
            except DatasetError as e:
                skip(e, iid, rid * REGION_ID_STRIDE + j)
    instances = {iid: _with_occluders(items) for iid, items in per_image.items()}
    out = [ImageRecord(im.id, im.path, im.width, im.height, tuple(instances[im.id])) for im in images]
    if check_images:
        check_image_files(out, path)
    categories = {cid: name for name, cid in category_ids.items()}
    return AmodalDataset(path.stem, path, tuple(out), categories, skips=tuple(skips))
