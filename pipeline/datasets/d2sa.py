"""D2SA (MVTec D2S amodal) annotation files.

Files `D2S_amodal_training_rot0.json`, `D2S_amodal_augmented.json`, `D2S_amodal_validation.json`
(and our synthetic `D2S_amodal_synth.json`): COCO JSON whose annotations hold
    segmentation   amodal mask (RLE; polygons and uncompressed RLE are accepted too)
    visible_mask   visible mask (same encodings), present on every annotation
    bbox           amodal box XYWH
The real files also carry `invisible_mask`, `occlude_rate`, `occl_depth`, `amodal_region`,
`amodal_base`, which we do not need (the occlusion rate is recomputed from the masks). Our
synthetic scenes add `occluder_ids`: ids of the instances covering part of the object.
Public converters (e.g. trqminh/aistron `datasets/prepare_d2sa.py`) read `visible_mask`
from every annotation without a default, so it is required here.
"""

from __future__ import annotations

from pipeline.datasets.coco_json import InstanceFields

FLAVOUR = "d2sa"

FIELDS = InstanceFields(
    amodal="segmentation", visible="visible_mask", bbox="bbox", occluders="occluder_ids"
)


def looks_like(annotation_keys: set[str], file_names: list[str]) -> bool:
    """COCO amodal schema (`segmentation` + `visible_mask`) on non-COCO images."""
    return {"segmentation", "visible_mask"} <= annotation_keys and not any(
        name.startswith("COCO_") for name in file_names
    )
