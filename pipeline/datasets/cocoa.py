"""COCOA-cls annotation files (`COCO_amodal_{train,val}2014_with_classes.json`).

The COCOA amodal annotations (Zhu et al., CVPR 2017) converted to COCO instance style with
the 80 COCO classes (Follmann et al., ORCNN, the D2SA authors): annotations hold
    segmentation   amodal mask (RLE; polygons / uncompressed RLE accepted too)
    visible_mask   visible mask
    bbox           amodal box XYWH
(plus `invisible_mask`, `occlude_rate`, ... which we recompute or do not need). Images are
COCO 2014 files named `COCO_{train,val}2014_<id>.jpg`.

Is `visible_mask` always present? In the *original* COCOA format (regions nested per image)
an unoccluded region has no `visible_mask` (XiaohangZhan/deocclusion `read_COCOA` falls back
to the amodal polygon). The `_with_classes` files are flat; the public converters of exactly
these files (trqminh/aistron `datasets/prepare_cocoa.py`, run on
`COCO_amodal_{train,val}2014_with_classes.json` by `prepare_cocoa.sh`) do
`ann.pop('visible_mask')` with no default over every annotation, which would fail if any
lacked it. So it is required here; a file without it fails with a clear error naming the
annotation rather than silently assuming the object is unoccluded. No field names the
occluding instances, so `occluder_ids` is None.
"""

from __future__ import annotations

from pipeline.datasets.coco_json import InstanceFields

FLAVOUR = "cocoa"

FIELDS = InstanceFields(amodal="segmentation", visible="visible_mask", bbox="bbox")


def looks_like(annotation_keys: set[str], file_names: list[str]) -> bool:
    """COCO amodal schema (`segmentation` + `visible_mask`) on COCO 2014 images."""
    return {"segmentation", "visible_mask"} <= annotation_keys and any(
        name.startswith("COCO_") for name in file_names
    )
