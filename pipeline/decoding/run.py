"""The decode stage: dataset + point prompts (+ the VLM's occluders) -> visible and amodal
prediction files (`pipeline/predictions.py` format), resumable per image (`parts.py`).

Per-instance fields written beyond the COCO result ones:
    both files  gt_id, prompt_mode, fallback (the sampler's, '' in box mode), smoke
    amodal file completion, modal_given, occluder_source (see `occluders.py`; null when the
                completion uses no occluders), occluder_ids (the instances whose masks were used),
                amodal_source (how the mask was made: the completion's name; for 'exemplar'
                see `exemplar_pass.py`, which also adds exemplar_fit and exemplar_gt_id)
Scores: the visible decoder's predicted IoU of the chosen mask; for the amodal file the amodal
decoder's (completion='decoder'), the visible one's (training-free), or 1.0 (modal-given).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline import masks as rle
from pipeline.attention.cache import params_hash, read_info, read_occlusion
from pipeline.datasets.record import AmodalDataset, ImageRecord
from pipeline.decoding.completion import DECODER, EXEMPLAR, complete, uses_occluders
from pipeline.decoding.exemplar_pass import complete_split
from pipeline.decoding.occluders import VlmOcclusion, choose_occluders, union
from pipeline.decoding.params import (
    DEFAULT_AMODAL,
    DEFAULT_CACHE,
    DEFAULT_POINTS,
    DEFAULT_VISIBLE,
    DecodeParams,
    SamModelParams,
)
from pipeline.decoding.parts import PartStore
from pipeline.decoding.prompts import PointIndex, PromptError, image_prompts
from pipeline.decoding.sam import DecodedMasks, SamModels, decode_image, load_image, load_sam_models
from pipeline.sampling.points_schema import read_points

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodeSummary:
    """What a decode run wrote."""

    visible_path: Path
    amodal_path: Path
    n_images: int
    n_visible: int
    n_amodal: int
    decoded_images: int  # images decoded in this run (the others were resumed from parts)
    smoke: bool


@dataclass
class _Inputs:
    points: PointIndex | None
    occlusion: dict | None
    smoke: bool
    provenance: dict


def _read_inputs(dataset: AmodalDataset, params: DecodeParams, points_path: Path, cache_path: Path) -> _Inputs:
    points, occlusion, smoke, provenance = None, None, False, {}
    if params.uses_points:
        table, meta = read_points(points_path)
        points = PointIndex(table, points_path)
        smoke |= bool(meta.get("smoke", False))
        provenance["points_params_hash"] = meta.get("params_hash")
        sampled_mode = (meta.get("params") or {}).get("prompt_mode")
        if sampled_mode is not None and sampled_mode != params.prompt_mode:
            raise PromptError(
                f"{points_path}: points were sampled for prompt_mode {sampled_mode!r} but decode uses "
                f"{params.prompt_mode!r}; use one prompt_mode for both stages"
            )
        wanted = {(im.id, inst.id) for im in dataset.images for inst in im.instances}
        missing = sorted(wanted - points.keys())
        if missing:
            raise PromptError(
                f"{points_path}: no points for {len(missing)} instance(s) of {dataset.annotation_file}, "
                f"e.g. (image_id, gt_id) {missing[:5]}; re-run the sample stage on this dataset"
            )
        extra = len(points.keys() - wanted)
        if extra:
            log.warning("%s: %d instance(s) have points but are not in %s; ignored", points_path, extra, dataset.annotation_file)
    if uses_occluders(params.completion) and params.occluders == "vlm":
        occlusion = read_occlusion(cache_path)
        info = read_info(cache_path)
        smoke |= info.smoke
        provenance["cache_params_hash"] = info.params_hash
    return _Inputs(points, occlusion, smoke, provenance)


def _entry(image: ImageRecord, inst, mask: np.ndarray, score: float, **extra) -> dict:
    return {
        "image_id": int(image.id),
        "category_id": int(inst.category_id),
        "segmentation": rle.encode(mask),
        "score": float(score),
        "gt_id": int(inst.id),
        **extra,
    }


def memory_inputs(points: PointIndex | None, occlusion: dict | None, smoke: bool) -> _Inputs:
    """Decode inputs held in memory (single-image mode, `pipeline/api.py`) instead of read
    from the stage files: the points of the image's instances, the VLM's occlusion answer per
    (image_id, gt_id) as `read_occlusion` gives it, and whether they came from random weights."""
    return _Inputs(points, occlusion, smoke, {})


def decode_one_image(
    image: ImageRecord,
    models: SamModels,
    params: DecodeParams,
    inputs: _Inputs,
    annotation_file: str | os.PathLike = "",
    pixels=None,
) -> tuple[list[dict], list[dict]]:
    """(visible entries, amodal entries) of one image.

    `pixels`: the image as float [1, 3, H, W] in [0, 1] when it is already in memory
    (single-image mode); None = read `image.path`.
    """
    if not image.instances:
        return [], []
    prompts = image_prompts(image.id, image.instances, params.prompt_mode, inputs.points)
    tensor = load_image(image.path, image.width, image.height, image.id) if pixels is None else pixels
    decoded: DecodedMasks = decode_image(models, tensor, prompts, params.max_queries_per_call)
    smoke = bool(inputs.smoke or models.smoke)
    common = {"prompt_mode": params.prompt_mode, "smoke": smoke}

    visible_entries = [
        _entry(image, inst, decoded.visible[q], decoded.visible_iou[q], fallback=prompts.fallbacks[q], **common)
        for q, inst in enumerate(image.instances)
    ]

    if params.modal_given:
        base = {inst.id: rle.decode(inst.visible_rle) for inst in image.instances}
        base_scores = np.ones(len(image.instances), dtype=np.float32)
    else:
        base = {inst.id: decoded.visible[q] for q, inst in enumerate(image.instances)}
        base_scores = decoded.visible_iou
    amodal_entries = []
    for q, inst in enumerate(image.instances):
        source, used = None, ()
        if params.completion == DECODER:
            mask, score = decoded.amodal[q], decoded.amodal_iou[q]
        else:
            occluder_mask = np.zeros((image.height, image.width), dtype=bool)
            if uses_occluders(params.completion):
                vlm = None
                if params.occluders == "vlm":
                    key = (int(image.id), int(inst.id))
                    if key not in inputs.occlusion:
                        raise KeyError(
                            f"attention cache: image {image.id} instance {inst.id} of {annotation_file} "
                            "has no occlusion answer (re-run the extract stage on this dataset)"
                        )
                    names, ids, error = inputs.occlusion[key]
                    vlm = VlmOcclusion(tuple(names), tuple(ids), error)
                try:
                    choice = choose_occluders(params.occluders, inst.id, inst.bbox, base, vlm, inst.occluder_ids)
                except ValueError as e:
                    raise ValueError(f"{annotation_file}: image {image.id}: {e}") from e
                source, used = choice.source, choice.ids
                occluder_mask = union(used, base, occluder_mask.shape)
            mask = complete(params.first_pass_completion, base[inst.id], occluder_mask, inst.bbox)
            score = base_scores[q]
        amodal_entries.append(
            _entry(
                image, inst, mask, score,
                fallback=prompts.fallbacks[q],
                completion=params.completion,
                modal_given=params.modal_given,
                occluder_source=source,
                occluder_ids=[int(i) for i in used],
                amodal_source=params.first_pass_completion,
                **common,
            )
        )
    return visible_entries, amodal_entries


def run_hash(dataset: AmodalDataset, params: DecodeParams, models: SamModels, inputs: _Inputs) -> str:
    """Hash of everything that determines the outputs (keys the resumable parts)."""
    return params_hash(
        {
            "decode": params.to_dict(),
            "models": models.provenance,
            "inputs": inputs.provenance,
            "smoke": inputs.smoke,
            "annotations": str(dataset.annotation_file),
        }
    )


def run_decode(
    dataset: AmodalDataset,
    params: DecodeParams,
    profile: str,
    sam_params: SamModelParams,
    points_path: str | os.PathLike = DEFAULT_POINTS,
    cache_path: str | os.PathLike = DEFAULT_CACHE,
    visible_path: str | os.PathLike = DEFAULT_VISIBLE,
    amodal_path: str | os.PathLike = DEFAULT_AMODAL,
    models: SamModels | None = None,
) -> DecodeSummary:
    """Decode every instance of `dataset`; resumes from finished images of an interrupted run."""
    inputs = _read_inputs(dataset, params, Path(points_path), Path(cache_path))
    if models is None:
        models = load_sam_models(profile, sam_params, params.completion == DECODER, params.device)
    smoke = bool(inputs.smoke or models.smoke)
    if smoke:
        log.warning("SMOKE run: random weights in the chain (EfficientSAM: %s, inputs: %s); outputs say smoke: true",
                    models.smoke, inputs.smoke)
    store = PartStore(visible_path, amodal_path, run_hash(dataset, params, models, inputs))
    done = store.done_image_ids()
    todo = [im for im in dataset.images if im.id not in done]
    if done:
        log.info("resuming: %d of %d images already decoded", len(dataset.images) - len(todo), len(dataset.images))
    for image in tqdm(todo, desc="decode", unit="img"):
        visible, amodal = decode_one_image(image, models, params, inputs, dataset.annotation_file)
        store.write(image.id, visible, amodal)
    split_pass = None
    if params.completion == EXEMPLAR:
        def split_pass(visible, amodal):
            return complete_split(dataset, params, visible, amodal)[0]
    n_visible, n_amodal = store.finalize([im.id for im in dataset.images], split_pass)
    return DecodeSummary(Path(visible_path), Path(amodal_path), len(dataset.images), n_visible, n_amodal, len(todo), smoke)
