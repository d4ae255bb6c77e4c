"""Which masks occlude an instance: the occluder choice behind `occluder_hull` / `occluder_box`.

The `occluders` parameter of the decode stage picks the rule:

    vlm      (default) the VLM's occlusion reasoning from the attention cache:
             - its answer parsed and named occluders that matched instances of the image
               -> those instances                                     source 'vlm'
             - its answer parsed and named no occluder at all
               -> no occluders: the VLM is trusted, amodal = visible   source 'vlm_none'
             - its answer parsed, named occluders, but none matched an instance
               -> every other instance overlapping the box             source 'overlap_unmatched'
             - its answer for the image failed to parse (occlusion_error)
               -> every other instance overlapping the box             source 'overlap_parse_failed'
    gt       the dataset's `occluder_ids` (oracle ablation; an error where the dataset has
             none)                                                     source 'gt'
    overlap  every other instance overlapping the box, ignoring the VLM  source 'overlap'

"Overlapping the box" = the other instance's visible mask (the mask used for completion:
decoded, or ground truth under modal-given) has at least one pixel inside the instance's
amodal box. Occluder masks only ever count inside the box, so this rule cannot reach
outside it; unlike the VLM it cannot tell occluders from objects behind the instance.
The source is recorded per instance in the amodal predictions (`occluder_source`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.decoding.completion import box_mask

OCCLUDER_RULES = ("vlm", "gt", "overlap")
OCCLUDER_SOURCES = ("vlm", "vlm_none", "overlap_unmatched", "overlap_parse_failed", "gt", "overlap")


@dataclass(frozen=True)
class VlmOcclusion:
    """The VLM's occlusion answer for one instance (from the attention cache)."""

    names: tuple[str, ...]  # occluder names the VLM gave
    ids: tuple[int, ...]  # the instance ids those names matched
    parse_error: str  # the image's occlusion_error; '' when the answer parsed


@dataclass(frozen=True)
class OccluderChoice:
    """The occluders used for one instance and why."""

    ids: tuple[int, ...]
    source: str


def overlapping(gt_id: int, box_xywh, masks: dict[int, np.ndarray]) -> tuple[int, ...]:
    """Ids of the other instances whose mask has a pixel inside `box_xywh`."""
    if not masks:
        return ()
    shape = next(iter(masks.values())).shape
    box = box_mask(box_xywh, *shape)
    return tuple(i for i, m in masks.items() if i != gt_id and bool((m & box).any()))


def choose_occluders(
    rule: str,
    gt_id: int,
    box_xywh,
    masks: dict[int, np.ndarray],
    vlm: VlmOcclusion | None = None,
    gt_ids: tuple[int, ...] | None = None,
) -> OccluderChoice:
    """Occluders of instance `gt_id` under `rule`; `masks` holds every instance of its image."""
    if rule == "overlap":
        return OccluderChoice(overlapping(gt_id, box_xywh, masks), "overlap")
    if rule == "gt":
        if gt_ids is None:
            raise ValueError(f"instance {gt_id}: occluders='gt' but the dataset gives no occluder_ids")
        return OccluderChoice(_known(gt_id, gt_ids, masks, "dataset"), "gt")
    if rule != "vlm":
        raise ValueError(f"unknown occluder rule {rule!r}; expected one of {OCCLUDER_RULES}")
    if vlm is None:
        raise ValueError(f"instance {gt_id}: occluders='vlm' needs the VLM's occlusion answer")
    if vlm.parse_error:
        return OccluderChoice(overlapping(gt_id, box_xywh, masks), "overlap_parse_failed")
    if not vlm.names:
        return OccluderChoice((), "vlm_none")
    if not vlm.ids:
        return OccluderChoice(overlapping(gt_id, box_xywh, masks), "overlap_unmatched")
    return OccluderChoice(_known(gt_id, vlm.ids, masks, "VLM"), "vlm")


def _known(gt_id: int, ids, masks: dict[int, np.ndarray], origin: str) -> tuple[int, ...]:
    ids = tuple(int(i) for i in ids if int(i) != gt_id)
    unknown = [i for i in ids if i not in masks]
    if unknown:
        raise ValueError(f"instance {gt_id}: {origin} occluder ids {unknown} are not instances of its image")
    return ids


def union(ids, masks: dict[int, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Union of the masks of `ids` (an empty mask of `shape` for no ids)."""
    out = np.zeros(shape, dtype=bool)
    for i in ids:
        out |= masks[i]
    return out
