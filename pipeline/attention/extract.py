"""The extract stage: per image, the VLM's occlusion answer and each instance's target maps,
written to the attention cache (`pipeline/attention/cache.py`), resumably.

Per batch of `extract.generation_batch` images (`occlusion_answers`): the occlusion prompts
(template `occlusion` with each image's phrases) answered greedily in one `generate` call
(`generation.py`: left padding, stop at the end of the JSON answer; equal to one-at-a-time);
the call's KV cache is kept for the batch's images.

Per image (`extract_image`):
1. prompts: one target prompt per instance (template `target` with the instance's phrase and
   box), and with sink removal the generic prompt (target template, `sink_phrase`,
   whole-image box);
2. token placement of the image (`placement.placement_for`); every prompt must hold the same
   image-token positions;
3. a runner executes the prompts: with prefix reuse (default) the image and the prompts'
   shared token prefix (the longest common prefix of all the image's prompts, cut before the
   first query row; it must contain every image token) are prefilled once and each prompt's
   suffix runs on that KV cache; without reuse every prompt is a full forward. Both give the
   same maps (tests/test_extract_stage.py). The occlusion prompt counts among the image's
   prompts: `render_chat` puts the image before the question in every prompt, so the prefix
   it shares with the target prompts holds the chat template's text up to the image and the
   image itself (a few text tokens shorter than the targets' own common prefix), and that
   prefix is cut out of the occlusion answer's KV cache (`prefix_reuse.prefix_from_batch`)
   instead of being prefilled again: one image prefill per image. Where the occlusion prompt
   does not share the image prefix, or the answer kept no cache, the targets' prefix is
   prefilled on its own and the reason is logged once;
4. the occlusion answer (generated for the batch, or here when none is given), parsed and
   matched (`occlusion.py`); a parse failure is recorded as the image's occlusion_error;
5. the captured rows of all instances, moved to the host in one copy (no per-instance
   device sync), → maps (`maps.py`), with the fallback flag.

The stage (`run_extract`) loops over the dataset's images with tqdm (in batches of
`generation_batch` for the occlusion answers), writes each finished
image to its own part file (atomic), skips images whose part exists on a re-run, and merges
the parts into the cache atomically at the end. Run as several processes, each takes its
shard of the images and the last to finish merges (`pipeline/scaling/`). It logs the image
prefills per image (`image_prefills.py`): 1 with prefix reuse and a shared occlusion prefix.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from pipeline.attention import maps as M
from pipeline.attention.capture import rows_to_host
from pipeline.attention.generation import AnswerBatch, generate_answer_batch
from pipeline.attention.image_prefills import ImagePrefillCounter
from pipeline.attention.prefix_reuse import PrefixShareError, PrefixState, prefix_from_batch
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
from pipeline.datasets.d2sa_phrases import default_phrases
from pipeline.datasets.image_identity import image_files_identity
from pipeline.datasets.record import AmodalDataset, DatasetError, ImageRecord
from pipeline.datasets.skips import (
    ImageSkipError, clear_skip_part, handle_image_error, merge_with_skips, read_image_checked, read_skips, skipped_image_ids,
    unfinished, write_skip_part, write_skips,
)
from pipeline.scaling.shards import Shard

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


class PrefixReuseRunner:
    """The image and the shared prompt prefix are prefilled once (`prefix_reuse.py`); each
    prompt's suffix then runs on that KV cache. `state`: that prefix of `first` prefilled
    already (e.g. by its occlusion answer); None = prefilled here."""

    def __init__(self, model, tokenizer, layers: list[int], first: EncodedPrompt, prefix_len: int,
                 state: PrefixState | None = None):
        from pipeline.attention.prefix_reuse import prefill

        self.model, self.tokenizer, self.layers = model, tokenizer, layers
        self.prefix_len = prefix_len
        self.prefix_ids = first.input_ids[:prefix_len]
        if state is None:
            state = prefill(model, _to_model(first.model_inputs, model), prefix_len)
        elif state.prefix_len != prefix_len or not np.array_equal(state.prefix_ids[0].cpu().numpy(), self.prefix_ids):
            raise RuntimeError("the given prefix state does not hold the prompt's prefix")
        self.state = state

    def _suffix(self, prompt: EncodedPrompt):
        if not np.array_equal(prompt.input_ids[: self.prefix_len], self.prefix_ids):
            raise RuntimeError("prompt does not start with the prefilled prefix")
        import torch

        # on the host: run_suffix checks it there and moves it without a device sync
        return torch.from_numpy(prompt.input_ids[self.prefix_len:])[None]

    def rows(self, prompt: EncodedPrompt, rows: list[int]) -> dict:
        from pipeline.attention.prefix_reuse import run_suffix

        if min(rows) < self.prefix_len:
            raise RuntimeError(f"query rows {rows} lie inside the shared prefix of {self.prefix_len} tokens")
        suffix_rows = [r - self.prefix_len for r in rows]
        return run_suffix(self.model, self.state, self._suffix(prompt), suffix_rows, self.layers)


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
        raise PrefixShareError(
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
    """The record's image as RGB PIL; ImageSkipError (a DatasetError) naming the file and image
    id when it cannot be read or is not the annotated size."""
    from PIL import Image

    return Image.fromarray(read_image_checked(record.path, record.width, record.height, record.id))


@dataclass
class OcclusionAnswer:
    """An image's occlusion prompt (its image inputs are reused by the target prompts), the
    model's raw answer, and the batch it was generated in (row `row` of `batch`, whose KV
    cache holds the prompt prefilled; None = no cache to share)."""

    prompt: EncodedPrompt
    text: str
    batch: AnswerBatch | None = None
    row: int = 0


def image_phrases(record: ImageRecord, params: ExtractParams) -> dict[int, str]:
    """{instance id: the phrase naming its category in prompts}."""
    return {inst.id: category_phrase(inst.category_name, params.phrase_overrides) for inst in record.instances}


def occlusion_prompt(processor, job: ImageJob, params: ExtractParams,
                     occlusion_names: list[str] | None = None) -> EncodedPrompt | None:
    """The image's occlusion prompt; None when not asked or the image has no instances.
    `occlusion_names` as in `extract_image`."""
    if not params.ask_occlusion or not job.record.instances:
        return None
    templates = params.all_templates()
    if params.occlusion_listing == "free":
        question = occlusion_question(templates["occlusion_free"], None)
    else:
        names = occlusion_names if occlusion_names is not None else \
            list(dict.fromkeys(image_phrases(job.record, params).values()))
        question = occlusion_question(templates["occlusion"], names)
    return encode_prompt(processor, job.image, question, False)


def occlusion_answers(vlm, jobs: list[ImageJob], params: ExtractParams,
                      occlusion_names: list[str] | None = None) -> list[OcclusionAnswer | None]:
    """Occlusion answers of `jobs` (None where `occlusion_prompt` is None), generated
    `params.generation_batch` prompts per `generate` call."""
    prompts = [occlusion_prompt(vlm.processor, job, params, occlusion_names) for job in jobs]
    asked = [i for i, p in enumerate(prompts) if p is not None]
    answers: list[OcclusionAnswer | None] = [None] * len(jobs)
    for start in range(0, len(asked), params.generation_batch):
        chunk = asked[start:start + params.generation_batch]
        batch = generate_answer_batch(vlm.model, vlm.processor.tokenizer, [prompts[i] for i in chunk],
                                      params.max_new_tokens)
        for row, (i, text) in enumerate(zip(chunk, batch.texts)):
            answers[i] = OcclusionAnswer(prompts[i], text, batch, row)
    return answers


NO_SHARED_IMAGE_PREFIX = "the occlusion and target prompts differ before the end of the image tokens"


@lru_cache(maxsize=None)
def _log_separate_prefill(reason: str) -> None:
    """Say once per reason why images are prefilled twice."""
    log.warning("the target prompts are prefilled apart from the occlusion prompt (two image prefills "
                "per image): %s", reason)


def occlusion_prefix(model, prompts: list[EncodedPrompt], answer: OcclusionAnswer) -> tuple[int, PrefixState]:
    """(prefix length, state) of the image prefix shared by the occlusion and target prompts,
    cut from the occlusion answer's KV cache; PrefixShareError saying why there is none."""
    if answer.batch is None:
        raise PrefixShareError("the occlusion answer kept no KV cache")
    try:
        prefix_len = shared_prefix_length([answer.prompt, *prompts])
    except PrefixShareError:
        raise PrefixShareError(NO_SHARED_IMAGE_PREFIX) from None
    return prefix_len, prefix_from_batch(model, answer.batch, answer.row, prefix_len)


def prefix_runner(model, tokenizer, layers: list[int], prompts: list[EncodedPrompt],
                  answer: OcclusionAnswer | None) -> PrefixReuseRunner:
    """The prefix-reuse runner of an image's target `prompts`: on the occlusion answer's KV
    cache when its prompt shares the image prefix with them, else on a prefill of their own."""
    if answer is not None:
        try:
            prefix_len, state = occlusion_prefix(model, prompts, answer)
            return PrefixReuseRunner(model, tokenizer, layers, answer.prompt, prefix_len, state)
        except PrefixShareError as e:
            _log_separate_prefill(str(e))
    return PrefixReuseRunner(model, tokenizer, layers, prompts[0], shared_prefix_length(prompts))


def extract_image(vlm, job: ImageJob, params: ExtractParams, layers: list[int], reuse_prefix: bool = True,
                  occlusion_names: list[str] | None = None, answer: OcclusionAnswer | None = None) -> ImageAttention:
    """Occlusion answer and target maps of one image (see module docstring).

    `occlusion_names`: the names listed in the occlusion question ('listed' mode); None =
    the image's instance phrases. `answer`: the image's occlusion answer from
    `occlusion_answers` (None = generated here when asked). `vlm` is a `LoadedVlm` whose
    language model has capture enabled.
    """
    from pipeline.attention.placement import placement_for

    record, image = job.record, job.image
    model, processor = vlm.model, vlm.processor
    templates = params.all_templates()
    layout = placement_for(model.config, processor, (record.height, record.width))
    phrases = image_phrases(record, params)
    result = ImageAttention(record.id, record.width, record.height, layout.placement, {})
    if not record.instances:
        result.occlusion_error = OCCLUSION_NO_INSTANCES
        return result
    if params.ask_occlusion and answer is None:
        answer = occlusion_answers(vlm, [job], params, occlusion_names)[0]

    # the image processor runs once; later prompts reuse its output
    image_inputs = answer.prompt.image_inputs if answer is not None else None

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
    sink_prompt = None
    if params.sink_removal:
        whole = box_text((0, 0, record.width, record.height), record.width, record.height, params.box_decimals)
        sink_prompt = encode(target_question(templates["target"], params.sink_phrase, whole))
        prompts.append(sink_prompt)

    positions = layout.image_positions(prompts[0].input_ids)
    for p in prompts[1:]:
        if not np.array_equal(p.image_positions, positions):
            raise RuntimeError(f"image {record.id}: prompts place the image tokens differently")

    if reuse_prefix:
        runner = prefix_runner(model, processor.tokenizer, layers, prompts, answer)
    else:
        runner = FullForwardRunner(model, processor.tokenizer, layers)

    entries = None
    if answer is not None:
        result.occlusion_raw = answer.text
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

    captured = rows_to_host([runner.rows(p, p.query_rows) for p in targets.values()])
    refs = [InstanceRef(inst.id, phrases[inst.id], inst.bbox) for inst in record.instances]
    for inst, ref, rows in zip(record.instances, refs, captured):
        prompt = targets[inst.id]
        heads = M.head_maps(rows, layers, positions, layout.keep)
        res = M.instance_maps(heads, sink_heads=sink_heads, **params.map_options())
        names, ids = match_occluders(entries, ref, refs) if entries is not None else ([], [])
        result.instances[inst.id] = InstanceAttention(
            gt_id=inst.id, category_name=inst.category_name, query_text=prompt.rendered,
            target_tokens=prompt.query_tokens, maps=res.maps, occluder_names=names, occluder_ids=ids,
            fallback=res.fallback, heads=res.heads if params.store_heads else None,
        )
    return result


# ---------------------------------------------------------------- the stage

def with_dataset_phrases(params: ExtractParams, flavour: str | None) -> ExtractParams:
    """`params` whose phrase_overrides hold the flavour's default phrase table (D2SA's English
    phrases, `pipeline/datasets/d2sa_phrases.py`) under the configured overrides, which win."""
    import dataclasses

    table = default_phrases(flavour)
    if not table:
        return params
    return dataclasses.replace(params, phrase_overrides={**table, **params.phrase_overrides})


def cache_info(vlm, params: ExtractParams, layers: list[int], dataset: AmodalDataset, dtype: str) -> CacheInfo:
    """File attributes of the cache; `params` holds everything the maps depend on."""
    run_params = {
        "extract": params.to_dict(),
        "layers_resolved": layers,
        "model": {"id": vlm.model_id, "revision": vlm.revision, "family": vlm.family,
                  "dtype": dtype, "smoke": vlm.smoke},
        "dataset": {"name": dataset.name, "annotations": str(dataset.annotation_file),
                    "image_files": image_files_identity(dataset), "proposals": dataset.proposals},
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
                reuse_prefix: bool = True, progress: bool = True, on_error: str = "stop",
                max_skipped_fraction: float = 1.0, shard: Shard = Shard()) -> Path:
    """Extract every image of `dataset` into the cache `out` (resumable; see module docstring).

    `on_error` ('stop' | 'skip', see DatasetParams): an image that cannot be read or is not its
    annotated size stops the run, or is left out of the cache and recorded, with the
    dataset's skipped annotations, in `<out>.skips.json`; more than `max_skipped_fraction`
    of the images skipped is an error (the finished images stay, so a re-run resumes).
    With a `shard` of several, only its images are extracted; the process that finds every
    image's part written merges them (`pipeline/scaling/merge.py`), so `out` may not exist yet
    when this returns.
    """
    import torch
    from tqdm import tqdm

    from pipeline.attention.capture import enable_capture
    from pipeline.attention.cache import missing_parts, parts_dir
    from pipeline.scaling.merge import merge_when_complete
    from pipeline.scaling.shards import shard_image_ids

    out = Path(out)
    params = with_dataset_phrases(params, dataset.flavour)
    if vlm.smoke:
        log.warning("%s (%s): the attention cache %s is a SMOKE result", SMOKE_LOG_LINE, vlm.model_id, out)
    n_layers = vlm.model.config.get_text_config().num_hidden_layers
    layers = resolve_layers(params.layers, n_layers, vlm.family)
    dtype = str(vlm.model.dtype).removeprefix("torch.")
    info = cache_info(vlm, params, layers, dataset, dtype)
    all_ids = [im.id for im in dataset.images]
    skips = list(dataset.skips)
    before = [s for s in read_skips(out) or [] if s.annotation_id is None]  # images skipped last time
    kept = [i for i in all_ids if i not in skipped_image_ids(before)]
    if (on_error == "skip" or not before) and _up_to_date(out, info, kept):
        log.info("%s is up to date (same parameters, all %d images): nothing to do", out, len(all_ids))
        write_skips(out, skips + before)
        return out
    writer = AttentionCacheWriter(out, info)
    done = writer.done_image_ids()
    mine = shard_image_ids(dataset.images, shard)
    todo = [im for im in dataset.images if im.id in mine and im.id not in done]
    if not shard.is_single:
        log.info("%s: %d of %d images", shard, len(mine), len(all_ids))
    if done:
        log.info("resuming: %d of %d images already extracted", len(mine) - len(todo), len(mine))
    enable_capture(vlm.model)
    extracted = 0
    with ImagePrefillCounter(vlm.model) as prefills, torch.inference_mode(), \
            tqdm(total=len(todo), desc="extract", unit="img", disable=not progress) as bar:
        for start in range(0, len(todo), params.generation_batch):
            jobs = []
            for record in todo[start:start + params.generation_batch]:
                try:
                    jobs.append(ImageJob(record, load_image(record)))
                except ImageSkipError as e:
                    handle_image_error(on_error, "extract", record, e, skips)
                    write_skip_part(parts_dir(out), skips[-1])
                    bar.update()
            extracted += _extract_batch(vlm, jobs, params, layers, reuse_prefix, writer, parts_dir(out), bar)
    if extracted:
        log.info("image prefills per image: %.2f (%d prefills for %d images)",
                 prefills.per_image(extracted), prefills.count, extracted)
    merged = merge_when_complete(
        parts_dir(out), lambda: unfinished(parts_dir(out), missing_parts(out, all_ids)),
        lambda: merge_cache(out, dataset, info, max_skipped_fraction), shard, str(out))
    if merged is not None:
        log.info("wrote %s (%d images, %d skipped)", out, len(all_ids), len(skipped_image_ids(merged)))
    return out


def _extract_batch(vlm, jobs: list[ImageJob], params: ExtractParams, layers: list[int], reuse_prefix: bool,
                   writer: AttentionCacheWriter, parts: Path, bar) -> int:
    """Extract and write one batch of images (their occlusion answers in one `generate`);
    the batch's KV cache is freed on return, before the next batch is generated."""
    for job, answer in zip(jobs, occlusion_answers(vlm, jobs, params)):
        writer.write_image(extract_image(vlm, job, params, layers, reuse_prefix, answer=answer))
        clear_skip_part(parts, job.record.id)
        bar.update()
    return len(jobs)


def merge_cache(out: str | os.PathLike, dataset: AmodalDataset, info: CacheInfo | None,
                max_skipped_fraction: float = 1.0) -> list:
    """Merge the cache `out` from its parts (finished and skipped images of `dataset`) and
    write its skip list; returns the skips. `info` None = the attributes stored in the parts."""
    from pipeline.attention.cache import merge_parts, parts_dir

    _, skips = merge_with_skips(
        parts_dir(out), [im.id for im in dataset.images], list(dataset.skips), len(dataset.images),
        max_skipped_fraction, str(dataset.annotation_file), lambda kept: merge_parts(out, kept, info))
    write_skips(out, skips)
    return skips
    return out
