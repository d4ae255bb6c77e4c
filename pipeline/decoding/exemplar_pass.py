"""The second pass of completion 'exemplar' over a whole split (see `exemplars.py`).

Input: the visible and amodal entries of every image of the split, the amodal ones already
completed by `exemplar_fallback` (the first pass, per image, in `run.py`), each with its
`occluder_ids` / `occluder_source`. The pass
  1. judges each instance unoccluded when nothing occludes it: the VLM named no occluder
     (`occluder_source` not 'vlm' / 'overlap_unmatched'), no occluder was used, no other
     instance's mask has a pixel in its box, its mask does not touch the image border and
     spans its amodal box (each side within `exemplar_size_tolerance`);
  2. keeps per class the `exemplar_bank_size` unoccluded instances whose area is closest to
     the class's median (ties: lower gt_id) and precomputes their poses (`ClassBank`);
  3. places the class's exemplars into every occluded instance's box.
Masks are the ones the completion starts from: the decoded visible masks, or the ground-truth
visible masks under the modal-given protocol. The result depends only on the set of
entries, never on their order, so the pass can run after all images of a run exist (also
after parts decoded by several processes are merged).

Each amodal entry gets `amodal_source` ('exemplar', or '<fallback>:<reason>' with the reasons
of `exemplars.py`), `exemplar_fit` (the best placement's fit, or null when none was
scored) and `exemplar_gt_id` (the exemplar instance used, or null).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from pipeline.datasets.record import AmodalDataset, ImageRecord
from pipeline.decoding.completion import EXEMPLAR, box_pixels
from pipeline.decoding.exemplars import ClassBank, Exemplar, NO_EXEMPLAR, NO_OCCLUDERS
from pipeline.decoding.params import DecodeParams
from pipeline.decoding.rle_crops import decode_crop, encode_crop, tight_box, union
from pipeline.masks import to_compressed

log = logging.getLogger(__name__)

VLM_NAMED = ("vlm", "overlap_unmatched")  # occluder sources where the VLM named an occluder


@dataclass(frozen=True)
class ExemplarPassSummary:
    """What the pass did: exemplars per category id, and amodal sources counted."""

    bank_sizes: dict[int, int]
    sources: dict[str, int]


@dataclass
class _Instance:
    gt_id: int
    category_id: int
    bbox: tuple
    rle: dict  # compressed
    box: tuple[int, int, int, int] | None  # tight pixel box of the mask


def _instances(image: ImageRecord, base: dict[int, dict], wanted: set[int]) -> list[_Instance]:
    out = []
    for inst in image.instances:
        if inst.id in wanted:
            rle = to_compressed(base[inst.id])
            out.append(_Instance(int(inst.id), int(inst.category_id), tuple(inst.bbox), rle, tight_box(rle)))
    return out


def _others_in_box(me: _Instance, others: list[_Instance], pixels: tuple[int, int, int, int]) -> bool:
    x0, y0, x1, y1 = pixels
    for o in others:
        if o.gt_id == me.gt_id or o.box is None:
            continue
        ix0, iy0, ix1, iy1 = max(x0, o.box[0]), max(y0, o.box[1]), min(x1, o.box[2]), min(y1, o.box[3])
        if ix0 < ix1 and iy0 < iy1 and decode_crop(o.rle, (ix0, iy0, ix1, iy1)).any():
            return True
    return False


def _spans_box(tight: tuple[int, int, int, int], bbox, tolerance: float) -> bool:
    x, y, w, h = (float(v) for v in bbox)
    x0, y0, x1, y1 = tight
    return (abs(x0 - x) <= tolerance * w and abs(x1 - (x + w)) <= tolerance * w
            and abs(y0 - y) <= tolerance * h and abs(y1 - (y + h)) <= tolerance * h)


def _unoccluded(me: _Instance, entry: dict, others: list[_Instance], image: ImageRecord, tolerance: float) -> bool:
    if me.box is None or entry["occluder_ids"] or entry.get("occluder_source") in VLM_NAMED:
        return False
    x0, y0, x1, y1 = me.box
    if x0 == 0 or y0 == 0 or x1 == image.width or y1 == image.height:
        return False  # cut by the image border
    if not _spans_box(me.box, me.bbox, tolerance):
        return False
    return not _others_in_box(me, others, box_pixels(me.bbox, image.height, image.width))


def _banks(candidates: dict[int, list[tuple[int, float, _Instance]]], params: DecodeParams) -> dict[int, ClassBank]:
    banks = {}
    for category_id in sorted(candidates):
        found = candidates[category_id]
        median = float(np.median([area for _, area, _ in found]))
        chosen = sorted(found, key=lambda c: (abs(c[1] - median), c[0]))[: params.exemplar_bank_size]
        exemplars = [Exemplar(gt_id, decode_crop(inst.rle, inst.box)) for gt_id, _, inst in sorted(chosen, key=lambda c: c[0])]
        banks[category_id] = ClassBank(exemplars, params.exemplar_angle_step, params.exemplar_flip)
    return banks


def base_masks(dataset: AmodalDataset, params: DecodeParams, visible_entries: list[dict]) -> dict[int, dict]:
    """The mask each instance's completion starts from, by gt_id: the ground-truth visible
    mask under modal_given, else the decoded one."""
    if params.modal_given:
        return {inst.id: inst.visible_rle for im in dataset.images for inst in im.instances}
    return {int(e["gt_id"]): e["segmentation"] for e in visible_entries}


def complete_split(
    dataset: AmodalDataset,
    params: DecodeParams,
    visible_entries: list[dict],
    amodal_entries: list[dict],
    progress: bool = True,
) -> tuple[list[dict], ExemplarPassSummary]:
    """Amodal entries of the split completed by class exemplars (same order as given)."""
    if params.completion != EXEMPLAR:
        raise ValueError(f"the exemplar pass runs for decode.completion 'exemplar', not {params.completion!r}")
    entries = {int(e["gt_id"]): e for e in amodal_entries}
    base = base_masks(dataset, params, visible_entries)
    missing = sorted(set(entries) - set(base))
    if missing:
        raise KeyError(f"exemplar pass: no visible mask for amodal gt_id(s) {missing[:5]} of {dataset.annotation_file}")
    known = {inst.id for im in dataset.images for inst in im.instances}
    unknown = sorted(set(entries) - known)
    if unknown:
        raise KeyError(f"exemplar pass: amodal gt_id(s) {unknown[:5]} are not instances of {dataset.annotation_file}")
    wanted = set(entries)
    images = [im for im in dataset.images if any(inst.id in wanted for inst in im.instances)]

    tol = params.exemplar_size_tolerance
    candidates: dict[int, list] = {}
    per_image = []
    for image in tqdm(images, desc="exemplar bank", unit="img", disable=not progress):
        insts = _instances(image, base, wanted)
        per_image.append((image, insts))
        for inst in insts:
            if _unoccluded(inst, entries[inst.gt_id], insts, image, tol):
                area = float(mask_utils.area(inst.rle))
                candidates.setdefault(inst.category_id, []).append((inst.gt_id, area, inst))
    banks = _banks(candidates, params)
    log.info("exemplar bank: %d exemplar(s) over %d of %d categories", sum(len(b.exemplars) for b in banks.values()),
             len(banks), len(dataset.categories))

    completed: dict[int, dict] = {}
    fallback = params.exemplar_fallback
    for image, insts in tqdm(per_image, desc="exemplar completion", unit="img", disable=not progress):
        by_id = {inst.gt_id: inst for inst in insts}
        for inst in insts:
            completed[inst.gt_id] = _complete_one(inst, entries[inst.gt_id], by_id, banks.get(inst.category_id),
                                                  image, params)
    out = [completed[int(e["gt_id"])] for e in amodal_entries]
    sources = Counter(e["amodal_source"] for e in out)
    log.info("amodal sources (exemplar, fallback %s): %s", fallback, dict(sorted(sources.items())))
    return out, ExemplarPassSummary({c: len(b.exemplars) for c, b in banks.items()}, dict(sorted(sources.items())))


def _complete_one(inst: _Instance, entry: dict, by_id: dict[int, _Instance], bank: ClassBank | None,
                  image: ImageRecord, params: DecodeParams) -> dict:
    out = {**entry, "amodal_source": None, "exemplar_fit": None, "exemplar_gt_id": None}
    fallback = params.exemplar_fallback
    ids = [int(i) for i in entry["occluder_ids"]]
    if not ids:
        out["amodal_source"] = f"{fallback}:{NO_OCCLUDERS}"
        return out
    if bank is None:
        out["amodal_source"] = f"{fallback}:{NO_EXEMPLAR}"
        return out
    pixels = box_pixels(inst.bbox, image.height, image.width)
    x0, y0, x1, y1 = pixels
    occluders = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    for i in ids:
        if i not in by_id:
            raise KeyError(f"{image.id}: instance {inst.gt_id} names occluder {i}, which has no visible mask")
        occluders |= decode_crop(by_id[i].rle, pixels)
    visible = decode_crop(inst.rle, pixels)
    placed = bank.place(visible, occluders, inst.bbox, (x0, y0), params.exemplar_size_tolerance,
                        params.exemplar_scale, params.exemplar_min_fit)
    out["exemplar_fit"] = placed.fit
    if placed.added is None:
        out["amodal_source"] = f"{fallback}:{placed.reason}"
        return out
    ax, ay = placed.added_origin
    crop_rle = encode_crop(placed.added, x0 + ax, y0 + ay, image.height, image.width)
    out["segmentation"] = union(inst.rle, crop_rle)
    out["amodal_source"] = EXEMPLAR
    out["exemplar_gt_id"] = placed.gt_id
    return out
