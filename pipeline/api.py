"""Single-image Python API: one image, one box and class name -> amodal and visible masks.

    from pipeline.api import VLMSAM

    model = VLMSAM.from_params("params.yaml")                  # loads the VLM and EfficientSAM once
    pred = model.predict("kitchen.jpg", (40, 60, 220, 300), "mug",
                         others=[((150, 80, 400, 320), "bottle")])
    pred.amodal_mask, pred.amodal_score, pred.occlusion.occluder_names, pred.smoke

The four pipeline steps run in memory through the stage functions themselves:
`extract_image` (VLM occlusion answer + target maps), `sample_image` (points),
`decode_one_image` (EfficientSAM + amodal completion). The objects of one call (the target
and its optional context objects `others`) form an in-memory `ImageRecord` whose instances
have ids 0, 1, ... in call order (0 = the target of `predict`, i + 1 = `others[i]`); every id
this API reports (occluders) is such an object index. User-given objects carry no masks
(`Instance.amodal_rle` etc. are None), so settings that need annotations are refused:
`decode.modal_given: true` and `decode.occluders: gt`.

Occlusion question: with context objects the configured `extract.occlusion_listing` applies
(default 'listed': the question names the objects); with none, the VLM lists the objects
itself ('free', template `occlusion_free`), and its occluder names can match no object.

Amodal completion (occluder_hull / occluder_box with decode.occluders 'vlm'): an occluder
name that matches a given object uses that object's decoded visible mask; a name that
matches none is located by its own attention and segmented in the same batched decoder
call (`pipeline/located_occluders.py`), and its mask completes the object. Each result says
where its amodal mask came from (`amodal_source`, `pipeline/decoding/amodal_source.py`) and
carries the occluder masks used (`occluder_masks`).

Reuse across objects: `predict_objects(image, objects)` predicts every object of one image in
ONE pass: one VLM prefix prefill (image + shared prompt prefix) and ONE EfficientSAM image
embedding with all objects as queries of one decoder call. Separate `predict` calls on the
same image each encode it again; predict several boxes of one image with `predict_objects`.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.attention.cache import CacheInfo, ImageAttention
from pipeline.attention.params import ExtractParams, VlmModelParams
from pipeline.datasets.record import AmodalDataset, ImageRecord, Instance
from pipeline.decoding.params import DecodeParams, SamModelParams, sam_models_from_section, segmenter_from_section
from pipeline.segmenters.params import SegmenterParams
from pipeline.errors import VlmsamError
from pipeline.params_file import DEFAULT_PARAMS, load_params, section
from pipeline.params_schema import check_known_keys
from pipeline.profiles import apply_overrides, with_resolved_profile
from pipeline.sampling.params import SampleParams
from pipeline.sampling.pixel_map import Grid, finest_token_side, paint, smooth, split_views, token_values

log = logging.getLogger("vlmsam.api")

IMAGE_ID = 0  # the id of the one image of the in-memory record
IN_MEMORY = "<in-memory image>"


class PredictInputError(VlmsamError, ValueError):
    """A bad image, box, class name or parameter for single-image prediction."""


# ---------------------------------------------------------------- results

@dataclass
class Occlusion:
    """The VLM's occlusion reasoning as it concerns one object.

    listing         'listed' (the question named the objects) or 'free' (the VLM listed them)
    raw             the VLM's answer as generated
    parsed_json     the parsed answer in canonical JSON; None when it did not parse
    error           why there is no parsed answer (parse error, or 'not asked ...'); None when parsed
    occluder_names  names the VLM gave as this object's occluders
    occluder_ids    object indices those names matched (same category name, overlapping box)
    """

    listing: str
    raw: str
    parsed_json: str | None
    error: str | None
    occluder_names: list[str]
    occluder_ids: list[int]


@dataclass
class OccluderMask:
    """An occluder mask the completion used for one object.

    index    a given object's index, or (>= the number of objects) a located occluder's
    name     the object's class name, or the VLM's name of a located occluder
    located  True when found by its own attention (named by the VLM, matching no object)
    mask     bool [H, W]: its decoded visible mask
    score    the segmenter's predicted IoU of that mask
    """

    index: int
    name: str
    located: bool
    mask: np.ndarray
    score: float


@dataclass
class Prediction:
    """Everything the pipeline produced for one object; arrays in original-image pixels.

    amodal_score / visible_score  the segmenter's predicted IoU (the amodal one is the visible
                    one for training-free completions, the amodal decoder's for 'decoder')
    layer_maps      {stored layer index: float32 [H, W]}: the object's attention per extracted
                    layer (views mixed as the sampler mixes them; NaN where no token covers)
    aggregated_map  float32 [H, W]: the layers combined with sample.layers / layer_weights and
                    smoothed, i.e. the sampler's map, painted over the whole image
    points, labels  the sampler's point prompts: float32 [N, 2] (x, y), int8 [N] 1/0
                    (empty in prompt_mode 'box', where the decoder gets the box only)
    points_sent     what the segmenter got under decode.negatives: {'points', 'labels', 'box'}
                    (under 'auto' EfficientSAM gets no label 0)
    point_sources   per point: 'peak', 'occluder', 'background', 'kmeans' or 'fallback'
    fallback        '' or why the sampler fell back to the box centre
    completion      the amodal completion variant (decode.completion)
    occluder_source which occluders the completion used and why (see decoding/occluders.py);
                    None when the completion needs none
    completion_occluder_ids  indices whose visible masks were used as occluders (objects,
                    and located occluders >= the number of objects; see `occluder_masks`)
    amodal_source   where the amodal mask came from: 'completion', 'decoder',
                    'visible: no occluder found', ... (pipeline/decoding/amodal_source.py)
    occluder_masks  the masks behind completion_occluder_ids, in that order
    smoke           True when any model had random weights: not a result
    """

    index: int
    class_name: str
    box_xyxy: tuple[float, float, float, float]
    width: int
    height: int
    amodal_mask: np.ndarray
    amodal_score: float
    visible_mask: np.ndarray
    visible_score: float
    occlusion: Occlusion
    layer_maps: dict[int, np.ndarray]
    aggregated_map: np.ndarray
    points: np.ndarray
    labels: np.ndarray
    point_sources: list[str]
    fallback: str
    completion: str
    occluder_source: str | None
    completion_occluder_ids: list[int]
    amodal_source: str
    occluder_masks: list[OccluderMask]
    prompt_mode: str
    smoke: bool
    points_sent: dict | None = None


# ---------------------------------------------------------------- inputs

@dataclass(frozen=True)
class LoadedImage:
    """An input image as RGB pixels, with its file when it came from one."""

    rgb: np.ndarray  # uint8 [H, W, 3]
    path: Path | None

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


def load_input_image(image) -> LoadedImage:
    """A path, PIL image or uint8 [H, W, 3] array as RGB pixels; clear errors otherwise."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: image file not found")
        try:
            with Image.open(path) as im:
                return LoadedImage(np.asarray(im.convert("RGB")).copy(), path)
        except (OSError, ValueError) as e:
            raise PredictInputError(f"{path}: not a readable image ({e})") from e
    if isinstance(image, Image.Image):
        return LoadedImage(np.asarray(image.convert("RGB")).copy(), None)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise PredictInputError(
                f"image array must be uint8 of shape [H, W, 3] (RGB), got {image.dtype} {list(image.shape)}"
            )
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise PredictInputError(f"image array is empty: shape {list(image.shape)}")
        return LoadedImage(np.ascontiguousarray(image), None)
    raise PredictInputError(f"image must be a path, a PIL image or a uint8 [H, W, 3] array, got {type(image).__name__}")


def check_box(box, width: int, height: int, what: str = "box") -> tuple[float, float, float, float]:
    """A validated x1, y1, x2, y2 pixel box inside a width x height image."""
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError) as e:
        raise PredictInputError(f"{what} must be 4 numbers x1 y1 x2 y2 (pixels), got {box!r}") from e
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise PredictInputError(f"{what} must be 4 finite numbers x1 y1 x2 y2 (pixels), got {box!r}")
    x1, y1, x2, y2 = values
    if not (x2 > x1 and y2 > y1):
        raise PredictInputError(f"{what} {values}: needs x2 > x1 and y2 > y1 (corners x1 y1 x2 y2, pixels)")
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        raise PredictInputError(
            f"{what} {values} reaches outside the {width}x{height} image (0 <= x1 < x2 <= {width}, "
            f"0 <= y1 < y2 <= {height})"
        )
    return x1, y1, x2, y2


def _check_class_name(name, what: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise PredictInputError(f"{what}: the class name must be a non-empty string, got {name!r}")
    return name.strip()


def image_record(image: LoadedImage, objects: Sequence[tuple[Sequence[float], str]]) -> ImageRecord:
    """The in-memory record of one image and its user-given objects (ids = object indices;
    category ids = first appearance of each class name, from 1; no masks)."""
    if not objects:
        raise PredictInputError("no objects: give at least one (box, class_name)")
    categories: dict[str, int] = {}
    instances = []
    for i, obj in enumerate(objects):
        what = "box" if i == 0 else f"object {i}"
        try:
            box, name = obj
        except (TypeError, ValueError) as e:
            raise PredictInputError(f"{what} must be a pair (box, class_name), got {obj!r}") from e
        x1, y1, x2, y2 = check_box(box, image.width, image.height, what)
        name = _check_class_name(name, what)
        category = categories.setdefault(name, len(categories) + 1)
        instances.append(Instance(i, category, name, (x1, y1, x2 - x1, y2 - y1), None, None, None))
    return ImageRecord(IMAGE_ID, image.path, image.width, image.height, tuple(instances))


# ---------------------------------------------------------------- maps in pixels

def whole_image_maps(
    attention: ImageAttention, gt_id: int, stored_layers: Sequence[int], layer_rows: Sequence[int],
    layer_weights: np.ndarray, params: SampleParams,
) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """({layer: float32 [H, W]}, aggregated float32 [H, W]) of one instance, one cell per pixel.

    Per layer: that layer's map, views normalised and mixed as the sampler does (`pixel_map`).
    Aggregated: the rows `layer_rows` weighted by `layer_weights`, then smoothed with the
    sampler's sigma (sample.smooth x the finest token side): the sampler's map, whole image.
    """
    width, height = attention.width, attention.height
    views = split_views(attention.placement)
    maps = np.asarray(attention.instances[gt_id].maps)  # [L, T]
    per_layer = token_values(maps[:, None, :], [0], np.ones(1), views, params.view_norm)  # [L, T]
    combined = token_values(maps[None], list(layer_rows), layer_weights, views, params.view_norm)  # [1, T]
    grid = Grid.over(0, 0, width, height, max(width, height))  # cells of exactly one pixel
    painted = paint(np.concatenate([per_layer, combined]), views, grid, params.view_weights)
    aggregated = smooth(painted[-1:], params.smooth * finest_token_side(views))[0]
    return {int(layer): painted[i] for i, layer in enumerate(stored_layers)}, aggregated


# ---------------------------------------------------------------- settings

@dataclass(frozen=True)
class PredictSettings:
    """The parameter sections single-image prediction reads, validated (no model loaded)."""

    source: str
    vlm: VlmModelParams
    profile: str
    sam: SamModelParams
    extract: ExtractParams
    sample: SampleParams
    decode: DecodeParams
    segmenter: SegmenterParams = SegmenterParams()

    @classmethod
    def from_params(cls, params: dict, source: str = "params") -> "PredictSettings":
        """From a whole parameter dict (params.yaml's shape: models, extract, sample, decode and
        the optional top-level prompt_mode; other sections are ignored)."""
        models = with_resolved_profile(section(params, "models", source), None, source)  # auto: real weights
        shared_mode = params.get("prompt_mode")
        try:
            vlm = VlmModelParams.from_models_section(models)
            profile, sam = sam_models_from_section(models)
            segmenter = segmenter_from_section(models)
            extract = ExtractParams.from_dict(section(params, "extract", source))
            sample = SampleParams.from_dict(section(params, "sample", source), shared_mode)
            decode = DecodeParams.from_dict(section(params, "decode", source), shared_mode)
        except ValueError as e:
            raise PredictInputError(f"{source}: {e}") from e
        if decode.modal_given:
            raise PredictInputError(
                f"{source}: decode.modal_given is true, but single-image prediction has no ground-truth "
                "visible masks to complete from; set decode.modal_given: false"
            )
        if decode.occluders == "gt":
            raise PredictInputError(
                f"{source}: decode.occluders is 'gt', but single-image prediction has no annotated "
                "occluders; use 'vlm' or 'overlap'"
            )
        return cls(source, vlm, profile, sam, extract, sample, decode, segmenter)


def resolve_params(params: str | os.PathLike | dict = DEFAULT_PARAMS, overrides: dict[str, Any] | None = None) -> tuple[dict, str]:
    """(parameter dict, its name for messages) from a file or dict, with dotted-key overrides;
    `__` in a key stands for `.` (so Python keywords can name nested keys)."""
    if isinstance(params, dict):
        raw, source = copy.deepcopy(params), "params (dict)"
    else:
        raw, source = load_params(params), str(params)
    dotted = {key.replace("__", "."): value for key, value in (overrides or {}).items()}
    try:
        resolved = apply_overrides(raw, dotted)
    except KeyError as e:
        raise PredictInputError(f"{source}: {e.args[0]}") from e
    check_known_keys(resolved, source)  # a dict or an override is as strict as the file
    return resolved, source


# ---------------------------------------------------------------- the model

class VLMSAM:
    """The pipeline for single images, models loaded once (see the module docstring)."""

    def __init__(self, settings: PredictSettings):
        from pipeline.attention.capture import enable_capture
        from pipeline.attention.params import resolve_layers
        from pipeline.attention.vlm import load_vlm
        from pipeline.decoding.completion import DECODER, EXEMPLAR
        from pipeline.decoding.sam import load_sam_models

        if settings.decode.completion == EXEMPLAR:
            raise PredictInputError(
                f"{settings.source}: decode.completion 'exemplar' draws its shapes from the unoccluded "
                "instances of a whole split; run the decode stage, or choose another completion here")
        self.settings = settings
        # the segmenter first: a missing checkpoint fails before the VLM loads
        self.sam = load_sam_models(settings.profile, settings.sam, settings.decode.completion == DECODER,
                                   settings.decode.device, settings.segmenter)
        self.vlm = load_vlm(settings.vlm)
        n_layers = self.vlm.model.config.get_text_config().num_hidden_layers
        try:
            self.layers = resolve_layers(settings.extract.layers, n_layers, self.vlm.family)
        except ValueError as e:
            raise PredictInputError(f"{settings.source}: {e}") from e
        enable_capture(self.vlm.model)
        self.smoke = bool(self.vlm.smoke or self.sam.smoke)
        if self.smoke:
            log.warning("SMOKE run: random weights (VLM smoke: %s, %s smoke: %s); predictions "
                        "are not results", self.vlm.smoke, self.sam.family, self.sam.smoke)

    @classmethod
    def from_params(cls, params: str | os.PathLike | dict = DEFAULT_PARAMS, **overrides) -> "VLMSAM":
        """Load the models a parameter file (or dict) describes, once.

        `overrides` set dotted parameter keys, written with `__` for `.` or passed as a dict:
        `VLMSAM.from_params("params.yaml", models__profile="smoke", extract__layers=[-2, -1])`
        or `VLMSAM.from_params(p, **{"models.profile": "smoke"})`.
        """
        raw, source = resolve_params(params, overrides)
        return cls(PredictSettings.from_params(raw, source))

    # -------------------------------------------------------------- prediction

    def predict(self, image, box: Sequence[float], class_name: str,
                others: Sequence[tuple[Sequence[float], str]] = ()) -> Prediction:
        """Masks and everything behind them for one object (box x1 y1 x2 y2 in pixels).

        `others`: optional context objects [(box, class_name), ...] of the same image; the VLM
        may name them as occluders and their decoded visible masks then complete the target's
        amodal mask. They are object indices 1, 2, ... in the result.
        """
        return self.predict_objects(image, [(box, class_name), *others])[0]

    def predict_objects(self, image, objects: Sequence[tuple[Sequence[float], str]]) -> list[Prediction]:
        """A `Prediction` per object of one image, all in one pass (one VLM prefix prefill, one
        EfficientSAM image embedding); object i has index i. Occluders the VLM names that
        match no object take a second prefill to be located (see the module docstring)."""
        import torch
        from threadpoolctl import threadpool_limits

        from pipeline import masks as rle
        from pipeline.attention.extract import ImageJob, extract_image
        from pipeline.decoding.completion import NEEDS_OCCLUDERS
        from pipeline.decoding.prompts import PointIndex
        from pipeline.decoding.run import decode_one_image, memory_inputs
        from pipeline.decoding.sam import image_tensor
        from pipeline.sampling.run import LayerChoice, points_table, sample_image
        from PIL import Image

        loaded = load_input_image(image)
        record = image_record(loaded, objects)
        extract = self.settings.extract
        listing = extract.occlusion_listing if len(record.instances) > 1 else "free"
        extract = dataclasses.replace(extract, occlusion_listing=listing)

        # 1. extract: the VLM's occlusion answer and every object's target maps
        pil = Image.fromarray(loaded.rgb)
        with torch.inference_mode():
            attention = extract_image(self.vlm, ImageJob(record, pil), extract, self.layers)
        info = self._cache_info(extract, record)
        objects_record = record
        matched = {g: [int(i) for i in att.occluder_ids] for g, att in attention.instances.items()}
        decode = self.settings.decode
        if decode.completion in NEEDS_OCCLUDERS and decode.occluders == "vlm":
            record = self._locate_occluders(record, attention, pil, extract)

        # 2. sample: point prompts from the maps
        sample = self.settings.sample
        choice = LayerChoice.resolve(sample, info, self.settings.source)
        gt_ids = [inst.id for inst in record.instances]
        with threadpool_limits(1):  # as the stage: BLAS/OpenMP pools only slow these small arrays
            points = sample_image(attention, record, sample, choice)

        # 3. decode: EfficientSAM once for all objects (and located occluders), amodal completion
        index = PointIndex(points_table(record.id, gt_ids, points, sample.hash), self.settings.source)
        occlusion = {
            (record.id, g): (att.occluder_names, att.occluder_ids, attention.occlusion_error)
            for g, att in attention.instances.items()
        }
        visible, amodal = decode_one_image(
            record, self.sam, decode, memory_inputs(index, occlusion, self.vlm.smoke),
            annotation_file=loaded.path or IN_MEMORY, pixels=image_tensor(loaded.rgb),
        )

        names = {inst.id: inst.category_name for inst in record.instances}
        decoded = {inst.id: vis for inst, vis in zip(record.instances, visible)}
        n_objects = len(objects_record.instances)
        results = []
        for inst, vis, amo in zip(objects_record.instances, visible, amodal):
            att = attention.instances[inst.id]
            layer_maps, aggregated = whole_image_maps(attention, inst.id, info.layers, choice.rows, choice.weights, sample)
            pts = points[inst.id]
            with_points = decode.uses_points
            x, y, w, h = inst.bbox
            results.append(Prediction(
                index=inst.id, class_name=inst.category_name, box_xyxy=(x, y, x + w, y + h),
                width=record.width, height=record.height,
                amodal_mask=rle.decode(amo["segmentation"]), amodal_score=float(amo["score"]),
                visible_mask=rle.decode(vis["segmentation"]), visible_score=float(vis["score"]),
                occlusion=Occlusion(
                    listing=listing, raw=attention.occlusion_raw,
                    parsed_json=attention.occlusion_json or None, error=attention.occlusion_error or None,
                    occluder_names=list(att.occluder_names), occluder_ids=matched[inst.id],
                ),
                layer_maps=layer_maps, aggregated_map=aggregated,
                points=np.stack([pts.x, pts.y], axis=1).astype(np.float32) if with_points else np.zeros((0, 2), np.float32),
                labels=pts.label.astype(np.int8) if with_points else np.zeros(0, np.int8),
                point_sources=list(pts.source) if with_points else [],
                fallback=vis["fallback"], completion=amo["completion"], occluder_source=amo["occluder_source"],
                completion_occluder_ids=list(amo["occluder_ids"]),
                amodal_source=amo["amodal_source"],
                occluder_masks=[OccluderMask(int(i), names[i], i >= n_objects, rle.decode(decoded[i]["segmentation"]),
                                             float(decoded[i]["score"])) for i in amo["occluder_ids"]],
                prompt_mode=decode.prompt_mode,
                smoke=bool(vis["smoke"] or amo["smoke"]),
                points_sent=vis["points_sent"],
            ))
        return results

    def _locate_occluders(self, record: ImageRecord, attention: ImageAttention, image,
                          extract: ExtractParams) -> ImageRecord:
        """`record` extended by the named occluders no object matches, with their maps added to
        `attention` (see `pipeline/located_occluders.py`); `record` itself when there are none."""
        import torch

        from pipeline.attention.extract import ImageJob, extract_image
        from pipeline.attention.prompts import category_phrase
        from pipeline.located_occluders import add_located, occluder_record, occluders_to_locate

        phrases = {inst.id: category_phrase(inst.category_name, extract.phrase_overrides) for inst in record.instances}
        located = occluders_to_locate(record, attention, phrases)
        if not located:
            return record
        occluders = occluder_record(record, located)
        with torch.inference_mode():
            found = extract_image(self.vlm, ImageJob(occluders, image),
                                  dataclasses.replace(extract, ask_occlusion=False), self.layers)
        log.info("located %d named occluder(s) by their own attention: %s", len(located),
                 ", ".join(o.name for o in located))
        return add_located(record, attention, occluders, found, located)

    def _cache_info(self, extract: ExtractParams, record: ImageRecord) -> CacheInfo:
        """What the attention cache would record for this one-image run (the sampler reads it)."""
        from pipeline.attention.extract import cache_info

        dataset = AmodalDataset("single image", record.path or Path(IN_MEMORY), (record,),
                                {inst.category_id: inst.category_name for inst in record.instances})
        dtype = str(self.vlm.model.dtype).removeprefix("torch.")
        return cache_info(self.vlm, extract, self.layers, dataset, dtype)
