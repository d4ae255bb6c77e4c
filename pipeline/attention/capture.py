"""Capture the attention rows of chosen query tokens in chosen language-model layers.

`enable_capture(model)` switches the model's language model (only; the vision tower keeps
its implementation) to the attention function registered here under `CAPTURE_ATTN`. That
function always computes the layer output with transformers' SDPA function, unchanged, so
the model's outputs equal a plain SDPA forward. Inside `capture_rows(model, layers, rows)`
it additionally computes, for the listed layers, softmax(q Kᵀ · scale + mask) of the listed
query rows over all keys (cached ones included), with grouped-query heads expanded to all
attention heads. Memory is rows × keys per head, never keys²; no `output_attentions`.

The same name is registered with `masking_utils.AttentionMaskInterface` (using `sdpa_mask`):
without it transformers builds no mask for an unknown attention name, and SDPA's top-left
causal alignment then silently corrupts any pass that adds more than one token to a KV cache.

Usage::

    enable_capture(model)
    with capture_rows(model, layers=[10, 14], rows=[52, 53]) as rec, torch.no_grad():
        model(**inputs)
    rec.result  # {10: Tensor[B, H, 2, K], 14: ...}
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator, Sequence

import torch

CAPTURE_ATTN = "vlmsam_capture"
"""Name of the capture attention function in transformers' attention and mask interfaces."""

_ACTIVE: ContextVar["RowRecorder | None"] = ContextVar("vlmsam_capture_recorder", default=None)


class RowRecorder:
    """Collects the captured rows of one forward pass: `result` is {layer: Tensor[B, H, R, K]}."""

    def __init__(self, modules: dict[int, int], rows: Sequence[int]):
        self._layer_of_module = modules  # id(attention module) -> layer index
        self.rows = [int(r) for r in rows]
        self._maps: dict[int, torch.Tensor] = {}

    def layer_for(self, module: torch.nn.Module) -> int | None:
        """The layer index of `module` when its rows are wanted, else None."""
        return self._layer_of_module.get(id(module))

    def record(self, layer: int, probs: torch.Tensor) -> None:
        if layer in self._maps:
            raise RuntimeError(
                f"layer {layer} ran twice inside one capture_rows block; capture one forward "
                "pass per block (not generate)"
            )
        self._maps[layer] = probs

    @property
    def layers(self) -> list[int]:
        return sorted(self._layer_of_module.values())

    @property
    def result(self) -> dict[int, torch.Tensor]:
        """{layer: float32 Tensor[B, H, R, K]}; raises if a requested layer did not run."""
        missing = [layer for layer in self.layers if layer not in self._maps]
        if missing:
            raise RuntimeError(f"no attention was captured for layers {missing}: did the forward run "
                               "inside the capture_rows block?")
        return dict(sorted(self._maps.items()))


def _row_probabilities(module, query, key, attention_mask, scaling, is_causal, rows):
    """softmax(q[rows] Kᵀ · scale + mask) per attention head, float32 [B, H, R, K]."""
    batch, n_heads, q_len, head_dim = query.shape
    n_kv_heads, kv_len = key.shape[1], key.shape[2]
    resolved = [r + q_len if r < 0 else r for r in rows]
    if any(r < 0 or r >= q_len for r in resolved):
        raise IndexError(f"capture rows {rows} out of range for a forward of {q_len} query tokens")
    index = device_tensor(resolved, query.device)
    groups = n_heads // n_kv_heads
    scale = head_dim**-0.5 if scaling is None else scaling
    # [B, KV, G, R, D] @ [B, KV, 1, D, K]: query head h uses KV head h // G (as repeat_kv), no K copy
    q_rows = query.index_select(2, index).float().reshape(batch, n_kv_heads, groups, len(rows), head_dim)
    scores = torch.matmul(q_rows, key.float().unsqueeze(2).transpose(-1, -2)) * scale
    scores = scores.reshape(batch, n_heads, len(rows), kv_len)
    if attention_mask is not None:
        mask_rows = attention_mask[:, :, index, :kv_len] if attention_mask.shape[2] > 1 \
            else attention_mask[..., :kv_len]
        if mask_rows.dtype == torch.bool:
            scores = scores.masked_fill(~mask_rows, float("-inf"))
        else:
            scores = scores + mask_rows.float()
    else:
        causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
        if causal and q_len > 1:
            # what SDPA's is_causal does (top-left aligned; transformers only omits the mask
            # when that alignment is right)
            allowed = torch.arange(kv_len, device=query.device)[None, :] <= index[:, None]
            scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1)


def device_tensor(values, device) -> torch.Tensor:
    """int64 tensor of `values` on `device`; to CUDA through pinned memory without blocking
    the host (a plain host-to-device copy waits for all queued GPU work)."""
    host = torch.as_tensor(values, dtype=torch.long)
    if torch.device(device).type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)


def rows_to_host(captured: list[dict[int, torch.Tensor]]) -> list[dict[int, torch.Tensor]]:
    """Captured rows of several forwards ({layer: Tensor} each) on the host, float32, moved in
    ONE device-to-host copy (each copy waits for the GPU)."""
    flat = [t for rows in captured for t in rows.values()]
    if not flat:
        return [{} for _ in captured]
    host = torch.cat([t.float().reshape(-1) for t in flat]).cpu()
    out, at = [], 0
    for rows in captured:
        moved = {}
        for layer, t in rows.items():
            moved[layer] = host[at:at + t.numel()].view(t.shape)
            at += t.numel()
        out.append(moved)
    return out


def capture_attention_forward(module, query, key, value, attention_mask, dropout=0.0,
                              scaling=None, is_causal=None, **kwargs):
    """Attention function: SDPA output, plus the wanted rows' probabilities when recording."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    output = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                    scaling=scaling, is_causal=is_causal, **kwargs)
    recorder = _ACTIVE.get()
    if recorder is not None:
        layer = recorder.layer_for(module)
        if layer is not None:
            probs = _row_probabilities(module, query, key, attention_mask, scaling, is_causal,
                                       recorder.rows)
            recorder.record(layer, probs.detach())
    return output


def register_capture() -> None:
    """Register `CAPTURE_ATTN` with transformers' attention and mask interfaces (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(CAPTURE_ATTN, capture_attention_forward)
    AttentionMaskInterface.register(CAPTURE_ATTN, sdpa_mask)


def _text_config_key(model) -> str | None:
    """Sub-config name of the language model's config (None when the model is a language model)."""
    text_config = model.config.get_text_config()
    if text_config is model.config:
        return None
    for key in model.config.sub_configs:
        if getattr(model.config, key, None) is text_config:
            return key
    raise ValueError(f"cannot find the text sub-config of {type(model).__name__}")


def _set_text_attention(model, implementation: str) -> None:
    key = _text_config_key(model)
    model.set_attn_implementation(implementation if key is None else {key: implementation})
    actual = model.config.get_text_config()._attn_implementation
    if actual != implementation:
        raise RuntimeError(f"could not switch the language model of {type(model).__name__} to "
                           f"{implementation!r} (it uses {actual!r})")


def enable_capture(model) -> None:
    """Switch only the language model of `model` to the capture attention (vision unchanged)."""
    register_capture()
    _set_text_attention(model, CAPTURE_ATTN)


def disable_capture(model) -> None:
    """Switch the language model back to plain SDPA."""
    _set_text_attention(model, "sdpa")


def decoder_layers(model):
    """The language model's decoder layers (`get_decoder().layers`)."""
    return model.get_decoder().layers


@contextmanager
def capture_rows(model, layers: Sequence[int], rows: Sequence[int]) -> Iterator[RowRecorder]:
    """Record attention rows of one forward pass of `model` (after `enable_capture(model)`).

    `layers`: language-model layer indices; `rows`: query positions of the forward's input
    (0-based within the tokens passed to this forward; negative counts from the end). The
    recorder's `result` is {layer: float32 Tensor[B, H, R, K]} with K all keys incl. cached.
    """
    used = model.config.get_text_config()._attn_implementation
    if used != CAPTURE_ATTN:
        raise RuntimeError(f"the language model uses attention {used!r}: call enable_capture(model) first")
    if _ACTIVE.get() is not None:
        raise RuntimeError("capture_rows blocks cannot be nested")
    if len(rows) == 0:
        raise ValueError("capture_rows needs at least one query row")
    all_layers = decoder_layers(model)
    modules = {}
    for layer in layers:
        if not 0 <= layer < len(all_layers):
            raise IndexError(f"layer {layer} out of range: the language model has {len(all_layers)} layers")
        modules[id(all_layers[layer].self_attn)] = int(layer)
    recorder = RowRecorder(modules, rows)
    token = _ACTIVE.set(recorder)
    try:
        yield recorder
    finally:
        _ACTIVE.reset(token)
