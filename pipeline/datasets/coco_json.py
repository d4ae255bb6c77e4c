"""COCO-style amodal annotation files: the helpers every flavour shares.

A flavour module only says which annotation fields hold the amodal mask, the visible mask,
the amodal box and the occluders (see `InstanceFields`); reading the file, the image and
category tables, mask decoding/validation, occlusion rates and image checks live here once.

Image sizes: the `images` entry (width, height) is authoritative. Every mask must be an RLE
of exactly [height, width] (or polygons, rasterised at that size), and the image file must
have that pixel size; nothing is rescaled or transposed to make them agree. This is the rule
of the detectron2 data path that the public D2SA amodal baselines (AISFormer, aistron, BCNet)
train and evaluate with: `detection_utils.check_image_size` raises SizeMismatchError when the
decoded image's (W, H) differs from the entry's, and pycocotools decodes an RLE at its own
`size`, so a mask of another size cannot be paired with the image. A record that breaks the
rule is malformed: under `dataset.on_error: skip` the annotation (or, at pixel-reading time,
the image) is left out with its reason (`pipeline/datasets/skips.py`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from pipeline import masks
from pipeline.datasets.record import AmodalDataset, DatasetError, ImageRecord, Instance


@dataclass(frozen=True)
class ImageInfo:
    """One entry of the `images` table, with its resolved file path."""

    id: int
    path: Path
    width: int
    height: int


@dataclass(frozen=True)
class InstanceFields:
    """Where one flavour keeps an instance's parts in an annotation dict.

    `amodal`, `visible`, `bbox` name required fields. `occluders` names the field holding a
    list of occluder instance ids, for flavours that have one (an annotation without it gets
    `occluder_ids=None`); None when the flavour has none.
    """

    amodal: str
    visible: str
    bbox: str
    occluders: str | None = None


def read_json(path: Path) -> dict:
    """The annotation file as a dict; DatasetError when missing, not JSON, or not a mapping."""
    if not path.exists():
        raise DatasetError(f"{path}: annotation file not found")
    if not path.is_file():
        raise DatasetError(f"{path}: not a file")
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object with 'images', 'annotations', 'categories'")
    return data


def require(record: dict, key: str, where: str) -> Any:
    """`record[key]`, or DatasetError naming `where` (file + record) and the missing field."""
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if key not in record:
        raise DatasetError(f"{where}: missing required field '{key}'")
    return record[key]


def _int(value: Any, what: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise DatasetError(f"{where}: field '{what}' must be an integer, got {value!r}")
    return int(value)


def top_level_list(data: dict, key: str, path: Path) -> list:
    """One of the COCO top-level lists (`images`, `annotations`, `categories`)."""
    value = require(data, key, str(path))
    if not isinstance(value, list):
        raise DatasetError(f"{path}: top-level '{key}' must be a list")
    return value


def parse_categories(data: dict, path: Path) -> dict[int, str]:
    """The category table id -> name."""
    categories: dict[int, str] = {}
    for i, cat in enumerate(top_level_list(data, "categories", path)):
        where = f"{path}: categories[{i}]"
        cid = _int(require(cat, "id", where), "id", where)
        name = require(cat, "name", where)
        if not isinstance(name, str) or not name:
            raise DatasetError(f"{where} (category id {cid}): 'name' must be a non-empty string")
        if cid in categories:
            raise DatasetError(f"{where}: duplicate category id {cid}")
        categories[cid] = name
    return categories


def parse_images(data: dict, path: Path, image_dir: Path) -> list[ImageInfo]:
    """The image table in file order, file names resolved against `image_dir`."""
    images: list[ImageInfo] = []
    seen: set[int] = set()
    for i, im in enumerate(top_level_list(data, "images", path)):
        where = f"{path}: images[{i}]"
        iid = _int(require(im, "id", where), "id", where)
        where = f"{path}: image id {iid}"
        file_name = require(im, "file_name", where)
        if not isinstance(file_name, str) or not file_name:
            raise DatasetError(f"{where}: 'file_name' must be a non-empty string")
        width = _int(require(im, "width", where), "width", where)
        height = _int(require(im, "height", where), "height", where)
        if width <= 0 or height <= 0:
            raise DatasetError(f"{where}: image size must be positive, got {width}x{height}")
        if iid in seen:
            raise DatasetError(f"{where}: duplicate image id")
        seen.add(iid)
        images.append(ImageInfo(iid, image_dir / file_name, width, height))
    return images


def _compressed_counts(counts: str) -> np.ndarray:
    """Decode COCO's compressed RLE string into run lengths (int64); ValueError if malformed.

    The format (pycocotools maskApi.c rleToString): each count is a little-endian sequence
    of 5-bit groups in chars '0'+c, bit 0x20 = "more groups follow", bit 0x10 of the last
    group = sign; from the 4th count on, the value is a delta to the count two places back.
    Vectorised with numpy so a D2SA-size file validates in seconds.
    """
    c = np.frombuffer(counts.encode("ascii", "replace"), np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, np.int64)
    if (c < 0).any() or (c >= 64).any():
        raise ValueError("invalid character in counts string")
    last = (c & 0x20) == 0
    if not last[-1]:
        raise ValueError("truncated counts string")
    ends = np.flatnonzero(last)
    starts = np.concatenate([[0], ends[:-1] + 1])
    group_len = ends - starts + 1
    if group_len.max() > 12:
        raise ValueError("count too large")
    k = np.arange(c.size) - np.repeat(starts, group_len)  # position inside its count
    x = np.add.reduceat((c & 0x1F) << (5 * k), starts)
    negative = (c[ends] & 0x10) != 0
    x = np.where(negative, x - (np.int64(1) << (5 * group_len)), x)
    runs = x.copy()
    runs[2::2] = np.cumsum(x[2::2])  # index 2 is absolute, 4, 6, ... add the one 2 back
    runs[1::2] = np.cumsum(x[1::2])  # index 1 is absolute, 3, 5, ... add the one 2 back
    return runs


def _validate_rle(seg: dict, height: int, width: int, where: str) -> dict:
    """A validated RLE with str counts, at the image size."""
    size = seg.get("size")
    counts = seg.get("counts")
    if (
        not (isinstance(size, (list, tuple)) and len(size) == 2)
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)
        or counts is None
    ):
        raise DatasetError(f"{where}: malformed RLE (needs 'size' [h, w] and 'counts')")
    if list(size) != [height, width]:
        raise DatasetError(
            f"{where}: RLE size {list(size)} does not match the image size [{height}, {width}]"
        )
    if isinstance(counts, list):
        runs = counts
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in runs):
            raise DatasetError(f"{where}: malformed RLE (uncompressed counts must be integers)")
    elif isinstance(counts, (str, bytes)):
        text = counts.decode("ascii", "replace") if isinstance(counts, bytes) else counts
        try:
            runs = _compressed_counts(text)
        except ValueError as e:
            raise DatasetError(f"{where}: malformed RLE ({e})") from e
    else:
        raise DatasetError(f"{where}: malformed RLE ('counts' must be a string or a list)")
    runs = np.asarray(runs, np.int64)
    if (runs < 0).any() or int(runs.sum()) != height * width:
        raise DatasetError(
            f"{where}: malformed RLE (run lengths must be >= 0 and sum to {height}*{width}, "
            f"got sum {int(runs.sum())})"
        )
    if isinstance(counts, list):
        rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
        return {"size": [height, width], "counts": rle["counts"].decode("ascii")}
    return {"size": [height, width], "counts": text}


def _validate_polygons(seg: list, where: str) -> list[list[float]]:
    """Polygon parts as float lists. A part of fewer than 3 points (< 6 coordinates) encloses
    no area and is left out (COCO and KINS files contain a few); a part with an odd number of
    coordinates or non-numbers is an error."""
    polygons = []
    for j, poly in enumerate(seg):
        if (
            not isinstance(poly, list)
            or len(poly) % 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in poly)
        ):
            raise DatasetError(
                f"{where}: malformed polygon {j} (needs an even number of numeric coordinates)"
            )
        if len(poly) >= 6:
            polygons.append([float(v) for v in poly])
    return polygons


def mask_to_rle(seg: Any, height: int, width: int, where: str) -> dict:
    """Any COCO mask encoding (compressed RLE, uncompressed RLE, polygons) -> RLE, str counts."""
    if isinstance(seg, dict):
        return _validate_rle(seg, height, width, where)
    if isinstance(seg, list):
        polygons = _validate_polygons(seg, where)
        if not polygons:  # no part encloses area: an empty mask (an error for amodal masks)
            return masks.encode(np.zeros((height, width), bool))
        return masks.polygons_to_rle(polygons, height, width)
    raise DatasetError(f"{where}: malformed mask (expected an RLE dict or a polygon list)")


def parse_bbox(value: Any, where: str) -> tuple[float, float, float, float]:
    """An XYWH box of 4 finite numbers with w, h >= 0."""
    if not (
        isinstance(value, (list, tuple))
        and len(value) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        and all(np.isfinite(v) for v in value)
    ):
        raise DatasetError(f"{where}: malformed bbox {value!r} (expected [x, y, w, h])")
    x, y, w, h = (float(v) for v in value)
    if w < 0 or h < 0:
        raise DatasetError(f"{where}: bbox has negative width/height {value!r}")
    return (x, y, w, h)


def occlusion_rate(amodal_rle: dict, visible_rle: dict, where: str) -> float:
    """1 - visible area / amodal area, clipped to [0, 1]; error when the amodal mask is empty."""
    amodal_area = masks.area(amodal_rle)
    if amodal_area <= 0:
        raise DatasetError(f"{where}: amodal mask is empty (area 0)")
    return float(min(1.0, max(0.0, 1.0 - masks.area(visible_rle) / amodal_area)))


def parse_instance(
    ann: dict, image: ImageInfo, categories: dict[int, str], fields: InstanceFields, where: str
) -> Instance:
    """One annotation -> Instance, using the flavour's field names."""
    aid = _int(require(ann, "id", where), "id", where)
    cid = _int(require(ann, "category_id", where), "category_id", where)
    if cid not in categories:
        raise DatasetError(f"{where}: unknown category id {cid}")
    amodal = mask_to_rle(require(ann, fields.amodal, where), image.height, image.width,
                         f"{where} '{fields.amodal}'")
    visible = mask_to_rle(require(ann, fields.visible, where), image.height, image.width,
                          f"{where} '{fields.visible}'")
    occluders = occluder_id_list(ann, fields.occluders, where) if fields.occluders else None
    return Instance(
        id=aid,
        category_id=cid,
        category_name=categories[cid],
        bbox=parse_bbox(require(ann, fields.bbox, where), f"{where} '{fields.bbox}'"),
        amodal_rle=amodal,
        visible_rle=visible,
        occlusion_rate=occlusion_rate(amodal, visible, where),
        occluder_ids=occluders,
    )


def occluder_id_list(ann: dict, key: str, where: str) -> tuple[int, ...] | None:
    """A list of instance ids under `key` (None when the annotation has no such field)."""
    if key not in ann:
        return None
    value = ann[key]
    if not isinstance(value, list):
        raise DatasetError(f"{where}: '{key}' must be a list of instance ids")
    return tuple(_int(v, key, where) for v in value)


def check_image_files(images: list[ImageRecord], path: Path) -> None:
    """Open every image with PIL; DatasetError naming the file and image id when one is
    missing, unreadable, or not the size the annotation file says."""
    from PIL import Image, UnidentifiedImageError

    for im in tqdm(images, desc=f"checking images of {path.name}", unit="img", leave=False):
        where = f"{path}: image id {im.id} ({im.path})"
        if not im.path.exists():
            raise DatasetError(f"{where}: image file not found")
        try:
            with Image.open(im.path) as pil:
                size = pil.size
                pil.load()
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
            raise DatasetError(f"{where}: image does not open ({e})") from e
        if size != (im.width, im.height):
            raise DatasetError(
                f"{where}: image is {size[0]}x{size[1]}, annotation says {im.width}x{im.height}"
            )


class _BadOccluder(DatasetError):
    """An occluder id that names no other instance of the image (`instance` holds it)."""

    def __init__(self, message: str, instance: Instance):
        super().__init__(message)
        self.instance = instance


def _without_occluders(inst: Instance, dropped: set) -> Instance:
    """`inst` with the ids in `dropped` (left-out annotations) removed from its occluder list."""
    if not inst.occluder_ids or not dropped.intersection(inst.occluder_ids):
        return inst
    return replace(inst, occluder_ids=tuple(o for o in inst.occluder_ids if o not in dropped))


def _check_occluders(instances: list[Instance], path: Path, image_id: int) -> None:
    """Occluder ids must name other instances of the same image."""
    ids = {inst.id for inst in instances}
    for inst in instances:
        for oid in inst.occluder_ids or ():
            if oid == inst.id or oid not in ids:
                raise _BadOccluder(
                    f"{path}: annotation id {inst.id}: occluder id {oid} is not another "
                    f"instance of image {image_id}", inst
                )


def build_dataset(
    path: Path,
    data: dict,
    image_dir: Path,
    fields: InstanceFields,
    max_images: int | None,
    check_images: bool,
    on_error: str = "stop",
) -> AmodalDataset:
    """Assemble an AmodalDataset from a parsed COCO-style file (images kept in file order).

    `on_error='skip'`: an annotation record that is malformed (bad field, mask of another size,
    unknown image or category, duplicate id, occluder id that names no other instance of its
    image) is left out and recorded in the dataset's `skips`; ids of left-out annotations are
    removed from the other instances' occluder lists (the skip record names them). The tables
    (`images`, `categories`) must still be well formed."""
    from pipeline.datasets.skips import ANNOTATION_MALFORMED, Skip

    skips: list[Skip] = []

    def skip(where: str, error: DatasetError, ann, image_id) -> None:
        if on_error == "stop":
            raise error
        ann_id = ann.get("id") if isinstance(ann, dict) else None
        skips.append(Skip("load", ANNOTATION_MALFORMED, str(path),
                          image_id if isinstance(image_id, int) else None,
                          ann_id if isinstance(ann_id, int) and not isinstance(ann_id, bool) else -1,
                          1, str(error)))

    categories = parse_categories(data, path)
    images = parse_images(data, path, image_dir)
    all_image_ids = {im.id for im in images}
    if max_images is not None:
        if max_images < 0:
            raise DatasetError(f"{path}: max_images must be >= 0, got {max_images}")
        images = images[:max_images]
    by_id = {im.id: im for im in images}
    per_image: dict[int, list[Instance]] = {im.id: [] for im in images}
    seen_ids: set[int] = set()
    anns = top_level_list(data, "annotations", path)
    for i, ann in enumerate(tqdm(anns, desc=f"reading {path.name}", unit="ann", leave=False,
                                 disable=len(anns) < 5000)):
        where = f"{path}: annotations[{i}]"
        if isinstance(ann, dict) and "id" in ann:
            where = f"{path}: annotation id {ann['id']}"
        iid = ann.get("image_id") if isinstance(ann, dict) else None
        try:
            iid = _int(require(ann, "image_id", where), "image_id", where)
            if iid not in all_image_ids:
                raise DatasetError(f"{where}: image_id {iid} is not in 'images'")
            if iid not in by_id:  # beyond max_images
                continue
            inst = parse_instance(ann, by_id[iid], categories, fields, where)
            if inst.id in seen_ids:
                raise DatasetError(f"{where}: duplicate annotation id {inst.id}")
        except DatasetError as e:
            skip(where, e, ann, iid)
            continue
        seen_ids.add(inst.id)
        per_image[iid].append(inst)
    dropped = {s.annotation_id for s in skips}
    for iid, instances in per_image.items():
        per_image[iid] = [_without_occluders(inst, dropped) for inst in instances]
    for iid in per_image:
        while True:  # leaving out one instance can break the occluder list of another
            try:
                _check_occluders(per_image[iid], path, iid)
                break
            except _BadOccluder as e:
                skip(str(path), e, {"id": e.instance.id}, iid)
                per_image[iid] = [i for i in per_image[iid] if i is not e.instance]
    records = [
        ImageRecord(im.id, im.path, im.width, im.height, tuple(per_image[im.id])) for im in images
    ]
    if check_images:
        check_image_files(records, path)
    return AmodalDataset(path.stem, path, tuple(records), categories, skips=tuple(skips))
