"""Prefill an image's shared prompt prefix once; run each instance's suffix on its KV cache.

All instances of an image share the prompt up to the image tokens and the text before the
instance-specific part. `prefill` runs the multimodal forward (vision tower included) once
over that prefix and keeps its KV cache; `run_suffix` runs one instance's suffix tokens on
the cache, capturing the attention rows of its target tokens (see `capture.py`), and crops
the cache back to the prefix afterwards, so instances never see each other (tests prove the
result equals a full forward of prefix + suffix, and that B after A equals B alone).
`generate_from_prefix` answers a question (greedy decoding) from the same prefix.

`prefix_from_batch` takes the prefix from the KV cache that a batched `generate` call left
behind (`generation.AnswerBatch`: the occlusion prompts of several images, left-padded):
the row's prefix positions without its padding, so an image whose occlusion prompt starts
with the shared prefix of its target prompts is prefilled once for both. Left padding
changes neither the positions (`generate` derives them from the attention mask, M-RoPE
included) nor the keys and values of the real tokens (padding is masked out), so the state
equals `prefill` of the prefix alone to float rounding (tests/test_generation.py).

M-RoPE models (the Qwen-VL families) compute their 3-D position ids themselves: the prefill
(cache empty) derives them from `image_grid_thw` and `mm_token_type_ids` and keeps the
offset of the text positions after the image in the model (`rope_deltas`); a forward on a
non-empty cache without attention mask continues at cache length + that offset. The prefix
keeps its `rope_deltas` and hands them back to the model before each suffix, so prefixes of
different images never mix. Suffix forwards pass no attention mask: one unpadded prompt
needs none (the causal mask is built from the cache length).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from pipeline.attention.capture import CAPTURE_ATTN, capture_rows, device_tensor, enable_capture
from pipeline.vlm_families import family_of_config

_TEXT_ONLY_KEYS = ("input_ids", "attention_mask")


@dataclass
class PrefixState:
    """The KV cache of one image's shared prompt prefix (batch 1)."""

    cache: object  # transformers DynamicCache holding exactly `prefix_len` positions
    prefix_len: int
    prefix_ids: torch.Tensor  # int64 [1, prefix_len]
    rope_deltas: torch.Tensor | None = None  # M-RoPE models: the model's rope_deltas after the prefill


class PrefixShareError(RuntimeError):
    """Prompts cannot share one prefilled prefix (the reason is the message)."""


def image_token_ids(model) -> list[int]:
    """The model's image (and video) placeholder token ids."""
    ids = [getattr(model.config, name, None) for name in ("image_token_id", "video_token_id")]
    return [int(i) for i in ids if i is not None]


def model_rope_deltas(model) -> torch.Tensor | None:
    """The rope_deltas an M-RoPE model kept from its latest prefill ([B, 1]); None otherwise
    (the family's `rope_state`)."""
    return family_of_config(model.config).rope_state(model)


def _check_cache(state: PrefixState) -> None:
    length = state.cache.get_seq_length()
    if length != state.prefix_len:
        raise RuntimeError(f"prefix cache holds {length} positions, expected {state.prefix_len}: "
                           "it was modified outside prefix_reuse")


def _crop_to_prefix(state: PrefixState) -> None:
    extra = state.cache.get_seq_length() - state.prefix_len
    if extra > 0:
        state.cache.crop(-extra)
    _check_cache(state)


def prefill(model, inputs: dict, prefix_len: int) -> PrefixState:
    """Run the multimodal forward over the first `prefix_len` tokens of `inputs` once.

    `inputs`: the processor's output for one prompt (input_ids [1, N], attention_mask,
    pixel_values, image_sizes, ...). Every image token must lie inside the prefix.
    """
    from transformers import DynamicCache

    input_ids = inputs["input_ids"]
    if input_ids.ndim != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"prefill takes one prompt (input_ids [1, N]), got shape {tuple(input_ids.shape)}")
    n_tokens = input_ids.shape[1]
    if not 0 < prefix_len <= n_tokens:
        raise ValueError(f"prefix_len {prefix_len} outside 1..{n_tokens}")
    mask = inputs.get("attention_mask")
    if mask is not None and not bool(mask[:, :prefix_len].all()):
        raise ValueError("the prompt prefix contains padding (attention_mask 0); pass an unpadded prompt")
    prefix_ids = input_ids[:, :prefix_len]
    for token_id in image_token_ids(model):
        n_all, n_prefix = int((input_ids == token_id).sum()), int((prefix_ids == token_id).sum())
        if n_all != n_prefix:
            raise ValueError(f"{n_all - n_prefix} of {n_all} image tokens (id {token_id}) lie after "
                             f"prefix_len {prefix_len}: the prefix must hold the whole image")
    per_token = family_of_config(model.config).per_token_inputs  # aligned with input_ids: cut to the prefix
    extra = {k: v[:, :prefix_len] if k in per_token else v
             for k, v in inputs.items() if k not in _TEXT_ONLY_KEYS}
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        out = model(input_ids=prefix_ids, attention_mask=torch.ones_like(prefix_ids),
                    cache=cache, use_cache=True, logits_to_keep=1, **extra)
    state = PrefixState(cache=out.cache, prefix_len=prefix_len, prefix_ids=prefix_ids.clone(),
                        rope_deltas=model_rope_deltas(model))
    _check_cache(state)
    return state


def prefix_from_batch(model, batch, row: int, prefix_len: int) -> PrefixState:
    """The state of the first `prefix_len` prompt tokens of row `row` of `batch` (a
    `generation.AnswerBatch`), copied out of the KV cache of its `generate` call.

    The copy holds that row's positions only (no padding, batch 1), so it behaves as
    `prefill` of the same prefix; the batch's cache is left as it is. The caller makes sure
    the prefix holds the whole image (its image tokens were prefilled in the batch).
    """
    from transformers import DynamicCache

    start = batch.padding[row]
    if not 0 < prefix_len <= batch.input_ids.shape[1] - start:
        raise ValueError(f"prefix_len {prefix_len} outside 1..{batch.input_ids.shape[1] - start} (row {row})")
    rows = []
    for layer in batch.cache.layers:
        if layer.is_sliding:
            raise PrefixShareError("the model's cache has sliding-window layers, which keep only their "
                                   "window of a generated batch")
        rows.append((layer.keys[row:row + 1, :, start:start + prefix_len],
                     layer.values[row:row + 1, :, start:start + prefix_len]))
    state = PrefixState(
        cache=DynamicCache(ddp_cache_data=rows, config=model.config), prefix_len=prefix_len,
        prefix_ids=batch.input_ids[row:row + 1, start:start + prefix_len].clone(),
        rope_deltas=None if batch.rope_deltas is None else batch.rope_deltas[row:row + 1])
    _check_cache(state)
    return state


def _check_suffix(model, state: PrefixState, suffix_ids: torch.Tensor) -> None:
    if suffix_ids.ndim != 2 or suffix_ids.shape[0] != 1 or suffix_ids.shape[1] == 0:
        raise ValueError(f"suffix_ids must be [1, S] with S >= 1, got shape {tuple(suffix_ids.shape)}")
    for token_id in image_token_ids(model):
        if bool((suffix_ids == token_id).any()):
            raise ValueError(f"suffix contains image token id {token_id}: images belong in the prefix")
    _check_cache(state)
    _restore_rope_deltas(model, state)


def _on_model_device(model, suffix_ids: torch.Tensor) -> torch.Tensor:
    """Suffix ids on the model's device; host ids go without blocking the host (`device_tensor`)."""
    if suffix_ids.device == model.device:
        return suffix_ids
    return device_tensor(suffix_ids, model.device)


def _forward_on_cache(model, cache, past_len: int, ids: torch.Tensor):
    """Forward `ids` after the `past_len` positions held by `cache` (which grows by len(ids))."""
    if cache.get_seq_length() != past_len:
        raise RuntimeError(f"the cache holds {cache.get_seq_length()} positions, expected {past_len}")
    return model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)


def _restore_rope_deltas(model, state: PrefixState) -> None:
    """Give an M-RoPE model back the rope_deltas of this prefix (another prefill replaces them)."""
    family_of_config(model.config).restore_rope_state(model, state.rope_deltas)


def run_suffix(model, state: PrefixState, suffix_ids: torch.Tensor, target_rows: Sequence[int],
               layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """Attention of the target rows of one instance's suffix: {layer: float32 Tensor[H, R, K]}.

    `suffix_ids` [1, S] are the tokens following the prefix; `target_rows` index them
    (0..S-1, so the absolute position is prefix_len + row); K = prefix_len + S covers all
    keys. Switches the language model to the capture attention if needed (outputs unchanged).
    The cache is cropped back to the prefix afterwards, also on error. Host `suffix_ids` are
    checked on the host and moved without a device sync.
    """
    _check_suffix(model, state, suffix_ids)
    suffix_ids = _on_model_device(model, suffix_ids)
    if model.config.get_text_config()._attn_implementation != CAPTURE_ATTN:
        enable_capture(model)
    try:
        with capture_rows(model, layers, target_rows) as recorder, torch.no_grad():
            _forward_on_cache(model, state.cache, state.prefix_len, suffix_ids)
        return {layer: probs[0] for layer, probs in recorder.result.items()}
    finally:
        _crop_to_prefix(state)


def _eos_ids(model, eos_token_ids) -> set[int]:
    if eos_token_ids is None:
        eos_token_ids = model.generation_config.eos_token_id
    if eos_token_ids is None:
        return set()
    if isinstance(eos_token_ids, int):
        return {eos_token_ids}
    return {int(i) for i in eos_token_ids}


def generate_from_prefix(model, state: PrefixState, suffix_ids: torch.Tensor, max_new_tokens: int,
                         eos_token_ids: int | Sequence[int] | None = None) -> torch.Tensor:
    """Greedy (argmax) continuation of prefix + suffix: new token ids [1, n] (n <= max_new_tokens).

    Stops after an end token (`eos_token_ids`, default the model's generation config), which
    is included as `generate` does. The cache is cropped back to the prefix afterwards.
    """
    _check_suffix(model, state, suffix_ids)
    suffix_ids = _on_model_device(model, suffix_ids)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    stop = _eos_ids(model, eos_token_ids)
    new_tokens: list[torch.Tensor] = []
    try:
        step_ids, past_len = suffix_ids, state.prefix_len
        with torch.no_grad():
            for _ in range(max_new_tokens):
                logits = _forward_on_cache(model, state.cache, past_len, step_ids).logits[:, -1]
                past_len += step_ids.shape[1]
                next_id = logits.argmax(dim=-1, keepdim=True)
                new_tokens.append(next_id)
                if int(next_id) in stop:
                    break
                step_ids = next_id
    finally:
        _crop_to_prefix(state)
    return torch.cat(new_tokens, dim=1)
