"""KINS annotation files (KITTI INStance, Qi et al., CVPR 2019), both published layouts.

`kins2020` — `update_{train,test}_2020.json` (the 2020 update with occlusion order):
    a_segm / i_segm    amodal / inmodal (visible) polygons
    a_bbox / i_bbox    amodal / inmodal boxes XYWH
    a_area / i_area    their areas
    oco_id, ico_id     per the KINS README (qqlu/Amodal-Instance-Segmentation-through-KINS-
                       Dataset, "Update 16.02.2020"): the *cluster id* and the *relative
                       occlusion order inside that cluster* (0 = overlaps nothing; from 1,
                       +1 each time occluded). They rank depth within a cluster but do not say
                       which instance occludes which, so `occluder_ids` is None here.
`kins_coco` — `instances_{train,val}.json` (the original release, COCO style):
    segmentation       amodal polygons
    bbox               amodal box XYWH
    inmodal_seg        visible mask as RLE
    inmodal_bbox       visible box
(the key list is confirmed in UARK-AICV/AISFormer issue #16; XiaohangZhan/deocclusion's
`read_KINS` decodes `inmodal_seg` directly as an RLE). No occluder ids either.
Both layouts accept any COCO mask encoding in any mask field.
"""

from __future__ import annotations

from pipeline.datasets.coco_json import InstanceFields

FIELDS_2020 = InstanceFields(amodal="a_segm", visible="i_segm", bbox="a_bbox")
FIELDS_COCO = InstanceFields(amodal="segmentation", visible="inmodal_seg", bbox="bbox")


def looks_like_2020(annotation_keys: set[str], file_names: list[str]) -> bool:
    """The 2020 layout: `a_segm` + `i_segm`."""
    return {"a_segm", "i_segm"} <= annotation_keys


def looks_like_coco(annotation_keys: set[str], file_names: list[str]) -> bool:
    """The COCO-style layout: `segmentation` + `inmodal_seg`."""
    return {"segmentation", "inmodal_seg"} <= annotation_keys
