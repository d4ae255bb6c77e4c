"""Target maps from captured attention rows.

Input: the attention of the query rows over all keys, per layer `{layer: [H, R, K]}`
(softmax probabilities, H = attention heads, R = query rows, K = key positions). Output:
per instance `maps` [L, T] over the T image tokens of the placement (newline tokens
dropped), optional per-head maps [L, H, T], and a fallback flag.

Steps (`instance_maps`):
1. keep the columns of the image tokens (the prompt's image-token positions whose `keep`
   is True, in sequence order = placement order) and average over the query rows → [L, H, T];
2. sink removal (optional): divide each head's map by the same head's map for the generic
   prompt plus `epsilon`, then rescale it to its original sum (so the values stay on the
   attention-probability scale and a map's total image attention is unchanged);
3. head aggregation per layer: the mean of all heads, or of the k heads whose map has the
   lowest Shannon entropy over the image tokens (most concentrated);
4. flag: 'nan' when any value is not finite, 'flat' when the layer-mean map has
   max / mean < flat_ratio (a uniform map has ratio 1; an all-zero map is flat).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FALLBACK_NAN = "nan"
FALLBACK_FLAT = "flat"


def image_token_rows(
    captured: dict, layers: list[int], image_positions: np.ndarray, keep: np.ndarray
) -> np.ndarray:
    """[L, H, R, T] float32: the captured rows restricted to the kept image-token columns."""
    image_positions = np.asarray(image_positions)
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != image_positions.shape:
        raise ValueError(
            f"keep mask has {keep.shape[0]} entries but the prompt has {image_positions.shape[0]} image tokens"
        )
    cols = image_positions[keep]
    out = []
    for layer in layers:
        if layer not in captured:
            raise KeyError(f"layer {layer} was not captured (captured: {sorted(captured)})")
        rows = captured[layer]
        rows = rows.float().cpu().numpy() if hasattr(rows, "cpu") else np.asarray(rows, np.float32)
        if rows.ndim != 3:
            raise ValueError(f"layer {layer}: expected captured rows [H, R, K], got shape {rows.shape}")
        if cols.size and cols.max() >= rows.shape[-1]:
            raise ValueError(f"layer {layer}: image token position {cols.max()} beyond {rows.shape[-1]} keys")
        out.append(rows[..., cols])
    return np.stack(out).astype(np.float32)


def entropy(maps: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each map normalised to sum 1, over the last axis.
    A map summing to 0 (or not finite) gets +inf: it is never the most concentrated."""
    total = maps.sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = maps / total
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(-1)
    return np.where(np.isfinite(h) & (total[..., 0] > 0), h, np.inf)


def remove_sink(head_maps: np.ndarray, sink_maps: np.ndarray, epsilon: float) -> np.ndarray:
    """[..., T] maps divided by the generic-prompt maps (+ epsilon), rescaled to their sums."""
    if head_maps.shape != sink_maps.shape:
        raise ValueError(f"sink maps {sink_maps.shape} do not match maps {head_maps.shape}")
    ratio = head_maps / (sink_maps + epsilon)
    scale = head_maps.sum(-1, keepdims=True) / ratio.sum(-1, keepdims=True).clip(min=np.finfo(np.float32).tiny)
    return (ratio * scale).astype(np.float32)


def aggregate_heads(head_maps: np.ndarray, mode: str, k: int) -> np.ndarray:
    """[L, H, T] → [L, T]: mean over all heads, or over the k lowest-entropy heads per layer."""
    if mode == "mean":
        return head_maps.mean(1)
    if mode == "lowest_entropy":
        k = min(k, head_maps.shape[1])
        order = np.argsort(entropy(head_maps), axis=1, kind="stable")[:, :k]  # [L, k]
        chosen = np.take_along_axis(head_maps, order[:, :, None], axis=1)
        return chosen.mean(1)
    raise ValueError(f"unknown head aggregation {mode!r}")


def fallback_flag(maps: np.ndarray, flat_ratio: float) -> str:
    """'' for a usable map, 'nan' or 'flat' (see module docstring)."""
    if not np.all(np.isfinite(maps)):
        return FALLBACK_NAN
    m = maps.mean(0)
    mean = float(m.mean())
    if mean <= 0 or float(m.max()) < flat_ratio * mean:
        return FALLBACK_FLAT
    return ""


@dataclass
class InstanceMaps:
    maps: np.ndarray  # float32 [L, T]
    heads: np.ndarray  # float32 [L, H, T] (after sink removal when enabled)
    fallback: str


def head_maps(captured: dict, layers: list[int], image_positions, keep, rows: list[int] | None = None) -> np.ndarray:
    """[L, H, T]: image-token attention averaged over the query rows (all rows, or the
    captured-row indices given)."""
    att = image_token_rows(captured, layers, image_positions, keep)
    if rows is not None:
        att = att[:, :, rows]
    return att.mean(2)


def instance_maps(
    heads: np.ndarray,
    *,
    aggregation: str = "mean",
    k: int = 8,
    sink_heads: np.ndarray | None = None,
    sink_epsilon: float = 1e-6,
    flat_ratio: float = 1.5,
) -> InstanceMaps:
    """Per-layer maps of one instance from its [L, H, T] head maps (steps 2-4 above)."""
    if sink_heads is not None:
        heads = remove_sink(heads, sink_heads, sink_epsilon)
    maps = aggregate_heads(heads, aggregation, k).astype(np.float32)
    return InstanceMaps(maps, heads.astype(np.float32), fallback_flag(maps, flat_ratio))
