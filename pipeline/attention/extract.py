"""The extract stage: per image, the VLM's occlusion answer and each instance's target maps,
written to the attention cache (`pipeline/attention/cache.py`), resumably.

Per image (`extract_image`):
1. prompts: one target prompt per instance (template `target` with the instance's phrase and
   box), the occlusion prompt (template `occlusion` with the image's phrases), and with
   sink removal the generic prompt (target template, `sink_phrase`, whole-image box);
2. token placement of the image (F2's `placement_for`); every prompt must hold the same
   image-token positions;
3. a runner executes the prompts: with prefix reuse (default) the image and the prompts'
   shared token prefix (the longest common prefix of all the image's prompts, cut before the
   first query row; it must contain every image token) are prefilled once and each prompt's
   suffix runs on that KV cache; without reuse every prompt is a full forward. Both give the
   same maps (tests/test_extract_stage.py);
4. the occlusion answer by greedy generation, parsed and matched (`occlusion.py`); a parse
   failure is recorded as the image's occlusion_error;
5. per instance the captured rows → maps (`maps.py`), with the fallback flag.

The stage (`run_extract`) loops over the dataset's images with tqdm, writes each finished
image to its own part file (atomic), skips images whose part exists on a re-run, and merges
the parts into the cache atomically at the end.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.attention import maps as M
from pipeline.attention.cache import (
    AttentionCacheWriter, CacheFormatError, CacheInfo, ImageAttention, InstanceAttention, read_info,
)
from pipeline.attention.occlusion import (
    InstanceRef, OcclusionParseError, entries_to_json, match_occluders, parse_occlusion_answer,
)
from pipeline.attention.params import ExtractParams, resolve_layers
from pipeline.attention.prompts import (
    EncodedPrompt, box_text, category_phrase, encode_prompt, occlusion_question, target_question,
)
from pipeline.datasets.record import AmodalDataset, DatasetError, ImageRecord

log = logging.getLogger(__name__)

SMOKE_LOG_LINE = "SMOKE run: random weights"
OCCLUSION_NOT_ASKED = "not asked (extract.ask_occlusion is false)"
OCCLUSION_NO_INSTANCES = "not asked (no instances in the image)"


# ---------------------------------------------------------------- runners

def _to_model(inputs: dict, model) -> dict:
    import torch

    out = {}
    for k, v in inputs.items():
        if isinstance(v, torch.Tensor):
            v = v.to(model.device)
            if v.is_floating_point():
                v = v.to(model.dtype)
        out[k] = v
    return out


class FullForwardRunner:
    """Every prompt is a full multimodal forward (the reference path, no KV-cache reuse)."""

    def __init__(self, model, tokenizer, layers: list[int]):
        self.model, self.tokenizer, self.layers = model, tokenizer, layers

    def rows(self, prompt: EncodedPrompt, rows: list[int]) -> dict:
        """{layer: Tensor[H, R, K]} attention of the given query rows of `prompt`."""
        from pipeline.attention.capture import capture_rows

        with capture_rows(self.model, self.layers, rows) as rec:
            self.model(**_to_model(prompt.model_inputs, self.model), use_cache=False)
        return {layer: t[0] for layer, t in rec.result.items()}

    def generate(self, prompt: EncodedPrompt, max_new_tokens: int) -> str:
        """Greedy answer to `prompt` (special tokens removed)."""
        inputs = _to_model(prompt.model_inputs, self.model)
        out = self.model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
            temperature=None, top_p=None, top_k=None,
        )
        return self.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


class PrefixReuseRunner:
    """The image and the shared prompt prefix are prefilled once (F1's `prefix_reuse`); each
    prompt's suffix then runs on that KV cache."""

    def __init__(self, model, tokenizer, layers: list[int], first: EncodedPrompt, prefix_len: int):
        from pipeline.attention.prefix_reuse import prefill

        self.model, self.tokenizer, self.layers = model, tokenizer, layers
        self.prefix_len = prefix_len
        self.prefix_ids = first.input_ids[:prefix_len]
        self.state = prefill(model, _to_model(first.model_inputs, model), prefix_len)

    def _suffix(self, prompt: EncodedPrompt):
        import torch

        if not np.array_equal(prompt.input_ids[: self.prefix_len], self.prefix_ids):
            raise RuntimeError("prompt does not start with the prefilled prefix")
        return torch.as_tensor(prompt.input_ids[self.prefix_len:], device=self.model.device)[None]

    def rows(self, prompt: EncodedPrompt, rows: list[int]) -> dict:
        from pipeline.attention.prefix_reuse import run_suffix

        if min(rows) < self.prefix_len:
            raise RuntimeError(f"query rows {rows} lie inside the shared prefix of {self.prefix_len} tokens")
        suffix_rows = [r - self.prefix_len for r in rows]
        return run_suffix(self.model, self.state, self._suffix(prompt), suffix_rows, self.layers)

    def generate(self, prompt: EncodedPrompt, max_new_tokens: int) -> str:
        from pipeline.attention.prefix_reuse import generate_from_prefix

        new_ids = generate_from_prefix(self.model, self.state, self._suffix(prompt), max_new_tokens)
        return self.tokenizer.decode(_as_list(new_ids), skip_special_tokens=True)


def _as_list(ids) -> list[int]:
    arr = ids.detach().cpu().numpy() if hasattr(ids, "detach") else np.asarray(ids)
    return [int(x) for x in arr.reshape(-1)]


def shared_prefix_length(prompts: list[EncodedPrompt]) -> int:
    """Longest common token prefix of the prompts, cut before any query row and before each
    prompt's last token (every suffix is non-empty); it must hold every image token."""
    ids = [p.input_ids for p in prompts]
    n = min(len(x) for x in ids) - 1
    for p in prompts:
        if p.query_rows:
            n = min(n, min(p.query_rows))
    first = ids[0]
    common = 0
    while common < n and all(x[common] == first[common] for x in ids[1:]):
        common += 1
    last_image = max(int(p.image_positions[-1]) for p in prompts)
    if common <= last_image:
        raise RuntimeError(
            f"the prompts share only {common} leading tokens but the image tokens reach position "
            f"{last_image}: the templates must put the image before any text that differs"
        )
    return common


# ---------------------------------------------------------------- one image

@dataclass
class ImageJob:
    """What extraction needs of one image: its record (instances with boxes) and pixels."""

    record: ImageRecord
    image: object  # PIL.Image in RGB


def load_image(record: ImageRecord):
    """The record's image as RGB PIL; DatasetError naming the file and image id on failure."""
    from PIL import Image

    try:
        with Image.open(record.path) as im:
            image = im.convert("RGB")
    except (OSError, ValueError) as e:
        raise DatasetError(f"{record.path}: image {record.id} cannot be read ({e})") from e
    if image.size != (record.width, record.height):
        raise DatasetError(
            f"{record.path}: image {record.id} is {image.size[0]}x{image.size[1]} pixels but the "
            f"annotations say {record.width}x{record.height}"
        )
    return image


def extract_image(vlm, job: ImageJob, params: ExtractParams, layers: list[int], reuse_prefix: bool = True,
                  occlusion_names: list[str] | None = None) -> ImageAttention:
    """Occlusion answer and target maps of one image (see module docstring).

    `occlusion_names`: the names listed in the occlusion question ('listed' mode); None =
    the image's instance phrases. `vlm` is a `LoadedVlm` whose language model has capture enabled.
    """
    from pipeline.attention.placement import placement_for

    record, image = job.record, job.image
    model, processor = vlm.model, vlm.processor
    templates = params.all_templates()
    layout = placement_for(model.config, processor, (record.height, record.width))
    phrases = {inst.id: category_phrase(inst.category_name, params.phrase_overrides) for inst in record.instances}
    result = ImageAttention(record.id, record.width, record.height, layout.placement, {})
    if not record.instances:
        result.occlusion_error = OCCLUSION_NO_INSTANCES
        return result

    image_inputs = None  # the image processor runs once; later prompts reuse its output

    def encode(question, include_last_token=params.include_last_token):
        nonlocal image_inputs
        prompt = encode_prompt(processor, image, question, include_last_token, image_inputs)
        image_inputs = prompt.image_inputs
        return prompt

    targets = {
        inst.id: encode(target_question(
            templates["target"], phrases[inst.id],
            box_text(inst.bbox, record.width, record.height, params.box_decimals)))
        for inst in record.instances
    }
    prompts = list(targets.values())
    occ_prompt = sink_prompt = None
    if params.ask_occlusion:
        if params.occlusion_listing == "free":
            question = occlusion_question(templates["occlusion_free"], None)
        else:
            names = occlusion_names if occlusion_names is not None else list(dict.fromkeys(phrases.values()))
            question = occlusion_question(templates["occlusion"], names)
        occ_prompt = encode(question, include_last_token=False)
        prompts.append(occ_prompt)
    if params.sink_removal:
        whole = box_text((0, 0, record.width, record.height), record.width, record.height, params.box_decimals)
        sink_prompt = encode(target_question(templates["target"], params.sink_phrase, whole))
        prompts.append(sink_prompt)

    positions = layout.image_positions(prompts[0].input_ids)
    for p in prompts[1:]:
        if not np.array_equal(p.image_positions, positions):
            raise RuntimeError(f"image {record.id}: prompts place the image tokens differently")

    if reuse_prefix:
        runner = PrefixReuseRunner(model, processor.tokenizer, layers, prompts[0], shared_prefix_length(prompts))
    else:
        runner = FullForwardRunner(model, processor.tokenizer, layers)

    entries = None
    if occ_prompt is not None:
        result.occlusion_raw = runner.generate(occ_prompt, params.max_new_tokens)
        try:
            entries = parse_occlusion_answer(result.occlusion_raw)
            result.occlusion_json = entries_to_json(entries)
        except OcclusionParseError as e:
            result.occlusion_error = str(e)
    else:
        result.occlusion_error = OCCLUSION_NOT_ASKED

    sink_heads = None
    if sink_prompt is not None:
        sink_heads = M.head_maps(runner.rows(sink_prompt, sink_prompt.query_rows), layers, positions, layout.keep)

    refs = [InstanceRef(inst.id, phrases[inst.id], inst.bbox) for inst in record.instances]
    for inst, ref in zip(record.instances, refs):
        prompt = targets[inst.id]
        heads = M.head_maps(runner.rows(prompt, prompt.query_rows), layers, positions, layout.keep)
        res = M.instance_maps(heads, sink_heads=sink_heads, **params.map_options())
        names, ids = match_occluders(entries, ref, refs) if entries is not None else ([], [])
        result.instances[inst.id] = InstanceAttention(
            gt_id=inst.id, category_name=inst.category_name, query_text=prompt.rendered,
            target_tokens=prompt.query_tokens, maps=res.maps, occluder_names=names, occluder_ids=ids,
            fallback=res.fallback, heads=res.heads if params.store_heads else None,
        )
    return result


# ---------------------------------------------------------------- the stage

def cache_info(vlm, params: ExtractParams, layers: list[int], dataset: AmodalDataset, dtype: str) -> CacheInfo:
    """File attributes of the cache; `params` holds everything the maps depend on."""
    run_params = {
        "extract": params.to_dict(),
        "layers_resolved": layers,
        "model": {"id": vlm.model_id, "revision": vlm.revision, "family": vlm.family,
                  "dtype": dtype, "smoke": vlm.smoke},
        "dataset": {"name": dataset.name, "annotations": str(dataset.annotation_file)},
    }
    return CacheInfo(vlm.model_id, vlm.revision, params.all_templates(), layers, run_params, vlm.smoke)


def _up_to_date(out: Path, info: CacheInfo, image_ids: list[int]) -> bool:
    if not out.exists():
        return False
    try:
        existing = read_info(out)
    except (CacheFormatError, OSError, KeyError):
        return False
    if existing.params_hash != info.params_hash:
        return False
    import h5py

    with h5py.File(out, "r") as f:
        return [int(k) for k in f["images"]] == image_ids


def run_extract(vlm, dataset: AmodalDataset, params: ExtractParams, out: str | os.PathLike,
                reuse_prefix: bool = True, progress: bool = True) -> Path:
    """Extract every image of `dataset` into the cache `out` (resumable; see module docstring)."""
    import torch
    from tqdm import tqdm

    from pipeline.attention.capture import enable_capture

    out = Path(out)
    if vlm.smoke:
        log.warning("%s (%s): the attention cache %s is a SMOKE result", SMOKE_LOG_LINE, vlm.model_id, out)
    n_layers = vlm.model.config.get_text_config().num_hidden_layers
    layers = resolve_layers(params.layers, n_layers, vlm.family)
    dtype = str(vlm.model.dtype).removeprefix("torch.")
    info = cache_info(vlm, params, layers, dataset, dtype)
    image_ids = [im.id for im in dataset.images]
    if _up_to_date(out, info, image_ids):
        log.info("%s is up to date (same parameters, all %d images): nothing to do", out, len(image_ids))
        return out
    writer = AttentionCacheWriter(out, info)
    done = writer.done_image_ids()
    todo = [im for im in dataset.images if im.id not in done]
    if done:
        log.info("resuming: %d of %d images already extracted", len(image_ids) - len(todo), len(image_ids))
    enable_capture(vlm.model)
    with torch.inference_mode():
        for record in tqdm(todo, desc="extract", unit="img", disable=not progress):
            job = ImageJob(record, load_image(record))
            writer.write_image(extract_image(vlm, job, params, layers, reuse_prefix))
    writer.finalize(image_ids)
    log.info("wrote %s (%d images)", out, len(image_ids))
    return out
