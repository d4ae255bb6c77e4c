"""Binary masks <-> COCO RLE (pycocotools), the one mask encoding of every file we write."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def encode(mask: np.ndarray) -> dict:
    """Binary HxW mask -> COCO RLE with `counts` as a str (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def decode(rle: dict) -> np.ndarray:
    """COCO RLE (compressed str/bytes counts or uncompressed list counts) -> bool HxW mask."""
    return mask_utils.decode(to_compressed(rle)).astype(bool)


def to_compressed(rle: dict) -> dict:
    """Return a compressed RLE (`counts` bytes) that pycocotools' C functions accept."""
    h, w = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, list):
        return mask_utils.frPyObjects(rle, h, w)
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return {"size": [int(h), int(w)], "counts": counts}


def area(rle: dict) -> float:
    """Pixel area of an RLE."""
    return float(mask_utils.area(to_compressed(rle)))


def polygons_to_rle(polygons: list[list[float]], height: int, width: int) -> dict:
    """COCO polygon list -> one merged RLE (str counts)."""
    rles = mask_utils.frPyObjects(polygons, height, width)
    rle = mask_utils.merge(rles)
    rle["counts"] = rle["counts"].decode("ascii")
    return rle
