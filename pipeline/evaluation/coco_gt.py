"""In-memory pycocotools ground truth built from an `AmodalDataset` record.

Two views of one dataset:
  amodal   segmentation = amodal RLE, area = amodal area, bbox = amodal box
  visible  segmentation = visible RLE, area = visible area, bbox = box of the visible RLE
Annotation ids are renumbered 1..N (COCOeval treats a matched id of 0 as "unmatched");
predictions are matched by IoU there, never by id. Instances whose visible mask is empty (fully occluded) are left out of the visible view:
no visible prediction can overlap them, so they would only cap visible recall.
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Literal

from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from pipeline.datasets.record import AmodalDataset
from pipeline.masks import to_compressed

View = Literal["amodal", "visible"]
log = logging.getLogger(__name__)


def coco_ground_truth(dataset: AmodalDataset, view: View) -> COCO:
    """A pycocotools `COCO` object holding the `view` ("amodal" or "visible") masks."""
    if view not in ("amodal", "visible"):
        raise ValueError(f"view must be 'amodal' or 'visible', got {view!r}")
    images, annotations = [], []
    for image in dataset.images:
        images.append({"id": image.id, "width": image.width, "height": image.height,
                       "file_name": str(image.path)})
        for inst in image.instances:
            rle = to_compressed(inst.amodal_rle if view == "amodal" else inst.visible_rle)
            area = float(mask_utils.area(rle))
            if view == "visible" and area == 0:
                continue
            bbox = list(inst.bbox) if view == "amodal" else mask_utils.toBbox(rle).tolist()
            annotations.append({"id": len(annotations) + 1, "image_id": image.id,
                                "category_id": inst.category_id, "segmentation": rle,
                                "area": area, "bbox": bbox, "iscrowd": 0})
    categories = [{"id": cid, "name": name} for cid, name in sorted(dataset.categories.items())]
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations, "categories": categories}
    quietly(coco.createIndex)
    return coco


def quietly(fn, *args, **kwargs):
    """Call a chatty pycocotools function with its prints routed to the debug log."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        result = fn(*args, **kwargs)
    text = buffer.getvalue().strip()
    if text:
        log.debug("pycocotools: %s", text)
    return result
