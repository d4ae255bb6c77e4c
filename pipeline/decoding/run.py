"""The decode stage: dataset + point prompts (+ the VLM's occluders) -> visible and amodal
prediction files (`pipeline/predictions.py` format), resumable per image (`parts.py`).

Per-instance fields written beyond the COCO result ones:
    both files  gt_id, prompt_mode, fallback (the sampler's, '' in box mode), smoke
    amodal file completion, modal_given, occluder_source (see `occluders.py`; null when the
                completion uses no occluders), occluder_ids (the instances whose masks were used),
                amodal_source (see `amodal_source.py`; for 'exemplar' see `exemplar_pass.py`,
                which also adds exemplar_fit and exemplar_gt_id)
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
from pipeline.datasets.skips import (
    ImageSkipError, Skip, clear_skip_part, handle_image_error, merge_with_skips, unfinished, without_skipped_images,
    write_skip_part, write_skips,
)
from pipeline.decoding.amodal_source import amodal_source
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
from pipeline.segmenters.params import SegmenterParams
from pipeline.decoding.sam import DecodedMasks, SamModels, decode_image, load_image, load_sam_models
from pipeline.sampling.points_schema import read_points
from pipeline.scaling.merge import merge_when_complete
from pipeline.scaling.shards import Shard, shard_image_ids

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodeSummary:
    """What a decode run wrote."""

    visible_path: Path
    amodal_path: Path
    n_images: int
    n_visible: int | None  # None: this shard did not merge (other shards still running)
    n_amodal: int | None
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
        **({} if inst.score is None else {"detector_score": float(inst.score)}),
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
    decoded: DecodedMasks = decode_image(models, tensor, prompts, params.max_queries_per_call, params.negatives)
    smoke = bool(inputs.smoke or models.smoke)
    common = {"prompt_mode": params.prompt_mode, "smoke": smoke}

    visible_entries = [
        _entry(image, inst, decoded.visible[q], decoded.visible_iou[q], fallback=prompts.fallbacks[q],
               points_sent=decoded.sent[q], **common)
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
                amodal_source=amodal_source(params.first_pass_completion, used),
                points_sent=decoded.sent[q],
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
            "proposals": dataset.proposals,
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
    segmenter: SegmenterParams | None = None,
    upstream_skips: list[Skip] | None = None,
    on_error: str = "stop",
    max_skipped_fraction: float = 1.0,
    shard: Shard = Shard(),
) -> DecodeSummary:
    """Decode every instance of `dataset`; resumes from finished images of an interrupted run.

    `upstream_skips`: the records the earlier stages left out (`<points>.skips.json`; None =
    only the dataset's own `skips`); their images are not decoded. Under `on_error='skip'` an
    image that cannot be read is left out too. All of them are written to
    `<amodal_path>.skips.json`; more than `max_skipped_fraction` of the images is an error.
    With a `shard` of several, only its images are decoded; the process that finds every
    image's part written merges them (`pipeline/scaling/merge.py`).
    """
    skips = list(dataset.skips if upstream_skips is None else upstream_skips)
    n_images = len(dataset.images)
    dataset = without_skipped_images(dataset, skips)
    inputs = _read_inputs(dataset, params, Path(points_path), Path(cache_path))
    if models is None:
        models = load_sam_models(profile, sam_params, params.completion == DECODER, params.device, segmenter)
    smoke = bool(inputs.smoke or models.smoke)
    if smoke:
        log.warning("SMOKE run: random weights in the chain (%s: %s, inputs: %s); outputs say smoke: true",
                    models.family, models.smoke, inputs.smoke)
    store = PartStore(visible_path, amodal_path, run_hash(dataset, params, models, inputs))
    done = store.done_image_ids()
    mine = shard_image_ids(dataset.images, shard)
    todo = [im for im in dataset.images if im.id in mine and im.id not in done]
    if not shard.is_single:
        log.info("%s: %d of %d images", shard, len(mine), len(dataset.images))
    if done:
        log.info("resuming: %d of %d images already decoded", len(mine) - len(todo), len(mine))
    for image in tqdm(todo, desc="decode", unit="img"):
        try:
            visible, amodal = decode_one_image(image, models, params, inputs, dataset.annotation_file)
        except ImageSkipError as e:
            skipped_here: list[Skip] = []
            handle_image_error(on_error, "decode", image, e, skipped_here)
            write_skip_part(store.dir, skipped_here[0])
            continue
        store.write(image.id, visible, amodal)
        clear_skip_part(store.dir, image.id)
    image_ids = [im.id for im in dataset.images]
    counts = merge_when_complete(
        store.dir, lambda: unfinished(store.dir, store.missing(image_ids)),
        lambda: merge_predictions(store, image_ids, skips, n_images, max_skipped_fraction,
                                  str(dataset.annotation_file), split_pass(dataset, params)),
        shard, f"{visible_path} and {amodal_path}")
    n_visible, n_amodal = counts if counts is not None else (None, None)
    return DecodeSummary(Path(visible_path), Path(amodal_path), len(dataset.images), n_visible, n_amodal, len(todo), smoke)


def split_pass(dataset: AmodalDataset, params: DecodeParams):
    """The pass over the whole split that follows the per-image decoding (the exemplar
    completion, `exemplar_pass.py`), or None; it runs where the parts are merged, so once over
    every image whatever the number of processes that decoded them."""
    if params.completion != EXEMPLAR:
        return None

    def complete_amodal(visible: list[dict], amodal: list[dict]) -> list[dict]:
        return complete_split(dataset, params, visible, amodal)[0]

    return complete_amodal


def merge_predictions(store: PartStore, image_ids: list[int], known_skips: list[Skip], n_images: int,
                      max_skipped_fraction: float, where: str, split_pass=None) -> tuple[int, int]:
    """Both prediction files from the parts of `image_ids` (finished or skipped), completed by
    `split_pass` when given, and the skip list beside the amodal file (`known_skips` + the
    images skipped here); returns the counts."""
    counts, skips = merge_with_skips(store.dir, image_ids, known_skips, n_images, max_skipped_fraction,
                                     where, lambda kept: store.finalize(kept, split_pass))
    write_skips(store.amodal_path, skips)
    return counts
