"""Greedy occlusion answers of several images in one `generate` call.

At batch 1 a 7B model's greedy decoding is memory-bound (every step reads all weights for
one token), so the occlusion answers of `extract.generation_batch` images are generated
together:

- batching (`batch_inputs`): the prompts (one image + the occlusion question each) are
  LEFT-padded to one length with the tokenizer's pad id (attention_mask 0 on the padding;
  `generate` derives the position ids from the mask, so every row sees the positions it has
  alone); image tensors are concatenated along the batch axis, anyres `pixel_values`
  [1, P, 3, S, S] padded with zero patches to the batch's largest P (`image_sizes` tell the
  model how many patches are real, the padding is never read); a flat patch list per prompt
  (Qwen's `pixel_values` [N, D], with `image_grid_thw` giving each image's share) is
  concatenated as it is; inputs aligned with the tokens (the family's `per_token_inputs`, e.g.
  `mm_token_type_ids`) are left-padded with 0 (text) like the ids;
- decoding: greedy (argmax), the model's end tokens end a row, as generating each prompt
  alone does; the answers equal one-at-a-time greedy answers (tests, all three families);
- stopping (`JsonAnswerStop`): a row also ends as soon as its answer is complete JSON, i.e.
  the text from its first "{" decodes as one JSON value (`occlusion.answer_is_complete`):
  its parsed answer can no longer change, so decoding on to `max_new_tokens` would only
  add tokens the parser ignores. The call ends when every row has ended;
- the KV cache (`generate_answer_batch`): `generate` leaves the KV cache of the whole batch
  behind; `AnswerBatch` keeps it with each row's left padding (and, for M-RoPE models, each
  row's rope_deltas), so the target prompts of an image can run on the prefix its occlusion
  prompt already prefilled (`prefix_reuse.prefix_from_batch`): one image prefill per image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from pipeline.attention.occlusion import answer_is_complete
from pipeline.attention.prefix_reuse import model_rope_deltas
from pipeline.attention.prompts import EncodedPrompt
from pipeline.vlm_families import family_of_config

_TEXT_KEYS = ("input_ids", "attention_mask")


class JsonAnswerStop:
    """Stopping criterion of `generate`: True for rows whose new text is a complete JSON answer.

    `prompt_len` is the (padded) prompt length: tokens after it are the answer. The full
    answer is decoded only when the latest token holds a "}" (the only token that can
    complete a JSON object), so a step costs one short decode per unfinished row.
    """

    def __init__(self, tokenizer, prompt_len: int, batch: int):
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len
        self.done = [False] * batch

    def __call__(self, input_ids: torch.Tensor, scores=None, **kwargs) -> torch.Tensor:
        last = input_ids[:, -1].tolist()
        for row, token in enumerate(last):
            if self.done[row] or "}" not in self.tokenizer.decode([token]):
                continue
            text = self.tokenizer.decode(input_ids[row, self.prompt_len:].tolist(), skip_special_tokens=True)
            self.done[row] = answer_is_complete(text)
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)


def _pad_patches(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Zero-pad dim 1 (anyres patches) of [1, P, ...] tensors to the largest P."""
    most = max(t.shape[1] for t in tensors)
    out = []
    for t in tensors:
        if t.shape[1] < most:
            pad = t.new_zeros((t.shape[0], most - t.shape[1], *t.shape[2:]))
            t = torch.cat([t, pad], dim=1)
        out.append(t)
    return out


def batch_inputs(prompts: Sequence[EncodedPrompt], pad_token_id: int, per_token_keys: Sequence[str] = ()) -> dict:
    """The prompts' model inputs as one left-padded batch (see module docstring); `per_token_keys`:
    the inputs aligned with the tokens (the family's `per_token_inputs`)."""
    if not prompts:
        raise ValueError("batch_inputs needs at least one prompt")
    keys = set(prompts[0].model_inputs)
    for p in prompts[1:]:
        if set(p.model_inputs) != keys:
            raise ValueError(f"prompts carry different inputs: {sorted(keys)} vs {sorted(p.model_inputs)}")
    length = max(len(p.input_ids) for p in prompts)
    ids = torch.full((len(prompts), length), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), length), dtype=torch.long)
    for row, p in enumerate(prompts):
        n = len(p.input_ids)
        ids[row, length - n:] = torch.as_tensor(p.input_ids)
        mask[row, length - n:] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    for key in sorted(keys - set(_TEXT_KEYS)):
        tensors = [p.model_inputs[key] for p in prompts]
        if not all(isinstance(t, torch.Tensor) for t in tensors):
            raise ValueError(f"input {key!r} is not a tensor in every prompt")
        if key in per_token_keys:  # aligned with input_ids: left-padded like them, 0 = text
            batch[key] = torch.zeros((len(prompts), length), dtype=tensors[0].dtype)
            for row, t in enumerate(tensors):
                batch[key][row, length - t.shape[-1]:] = t.reshape(-1)
            continue
        flat_patches = all(t.ndim == 2 for t in tensors) and len({t.shape[1] for t in tensors}) == 1
        if len({tuple(t.shape) for t in tensors}) > 1 and not flat_patches:
            if any(t.ndim < 3 for t in tensors) or len({(t.shape[0], *t.shape[2:]) for t in tensors}) > 1:
                raise ValueError(f"input {key!r} has shapes that cannot be batched: {[tuple(t.shape) for t in tensors]}")
            tensors = _pad_patches(tensors)
        batch[key] = torch.cat(tensors, dim=0)
    return batch


def pad_token_id(model, tokenizer) -> int:
    """The pad id for left padding: the tokenizer's, else the model's, else its first end token."""
    for candidate in (tokenizer.pad_token_id, model.generation_config.pad_token_id):
        if candidate is not None:
            return int(candidate)
    eos = model.generation_config.eos_token_id
    if eos is None:
        raise ValueError(f"{type(model).__name__}: no pad or end token id to pad prompts with")
    return int(eos if isinstance(eos, int) else eos[0])


@dataclass
class AnswerBatch:
    """Greedy answers of a batch of prompts and the KV cache their `generate` call left behind.

    cache        DynamicCache of batch B: row i holds `padding[i]` pad positions, then its
                 prompt, then its answer tokens (the cache ends one token before the longest)
    padding      left padding of each row
    input_ids    int64 [B, L] the padded prompts (L = the padded prompt length)
    rope_deltas  [B, 1] the M-RoPE offsets of the rows' text positions (None: no M-RoPE)
    """

    texts: list[str]
    cache: object
    padding: list[int]
    input_ids: torch.Tensor
    rope_deltas: torch.Tensor | None = None


def generate_answer_batch(model, tokenizer, prompts: Sequence[EncodedPrompt], max_new_tokens: int,
                          stop_at_json: bool = True) -> AnswerBatch:
    """Greedy answers to `prompts` in ONE `generate` call (special tokens removed), in order,
    with the batch's KV cache."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    pad = pad_token_id(model, tokenizer)
    batch = batch_inputs(prompts, pad, family_of_config(model.config).per_token_inputs)
    inputs = {}
    for key, value in batch.items():
        value = value.to(model.device)
        inputs[key] = value.to(model.dtype) if value.is_floating_point() else value
    prompt_len = inputs["input_ids"].shape[1]
    stopping = [JsonAnswerStop(tokenizer, prompt_len, len(prompts))] if stop_at_json else None
    with torch.inference_mode():
        out = model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
            temperature=None, top_p=None, top_k=None, pad_token_id=pad, stopping_criteria=stopping,
            return_dict_in_generate=True,
        )
    texts = tokenizer.batch_decode(out.sequences[:, prompt_len:].tolist(), skip_special_tokens=True)
    padding = [prompt_len - len(p.input_ids) for p in prompts]
    rope_deltas = model_rope_deltas(model)  # set by this call's prefill, before any other forward
    if rope_deltas is not None and rope_deltas.shape[0] != len(prompts):
        raise RuntimeError(f"the model kept rope_deltas of {rope_deltas.shape[0]} rows for a batch of {len(prompts)}")
    return AnswerBatch(texts, out.cache, padding, inputs["input_ids"], rope_deltas)


def generate_answers(model, tokenizer, prompts: Sequence[EncodedPrompt], max_new_tokens: int,
                     stop_at_json: bool = True) -> list[str]:
    """Greedy answers to `prompts` in ONE `generate` call (special tokens removed), in order."""
    return generate_answer_batch(model, tokenizer, prompts, max_new_tokens, stop_at_json).texts
