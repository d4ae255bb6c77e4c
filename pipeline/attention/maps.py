"""Target maps from captured attention rows.

Input: the attention of the query rows over all keys, per layer `{layer: [H, R, K]}`
(softmax probabilities, H = attention heads, R = query rows, K = key positions). Output:
per instance `maps` [L, T] over the T image tokens of the placement (newline tokens
dropped), optional per-head maps [L, H, T], and a fallback flag.

Steps (`instance_maps`):
1. keep the columns of the image tokens (the prompt's image-token positions whose `keep`
   is True, in sequence order = placement order) and average over the query rows → [L, H, T];
2. sink removal (optional), with the same head's map for the generic prompt: 'ratio' divides
   by it plus `epsilon` (ViCrop's relative attention), 'subtract' keeps the positive part of
   the map minus `weight` times it (DecAF); either way the map is then rescaled to its
   original sum (so the values stay on the attention-probability scale and a map's total
   image attention is unchanged);
3. head aggregation per layer: the mean of all heads; or of the k heads whose map has the
   lowest Shannon entropy over the image tokens (most concentrated); or 'localization'
   (`localization_heads`): drop sink-dominated heads, then the k lowest-entropy heads;
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


def remove_sink(head_maps: np.ndarray, sink_maps: np.ndarray, epsilon: float, method: str = "ratio",
                weight: float = 1.0) -> np.ndarray:
    """[..., T] maps with the generic-prompt maps removed, rescaled to their sums: 'ratio'
    divides by them (+ epsilon), 'subtract' keeps max(map - weight * generic, 0)."""
    if head_maps.shape != sink_maps.shape:
        raise ValueError(f"sink maps {sink_maps.shape} do not match maps {head_maps.shape}")
    if method == "ratio":
        ratio = head_maps / (sink_maps + epsilon)
    elif method == "subtract":
        ratio = np.maximum(head_maps - weight * sink_maps, 0.0)
    else:
        raise ValueError(f"unknown sink removal method {method!r}")
    scale = head_maps.sum(-1, keepdims=True) / ratio.sum(-1, keepdims=True).clip(min=np.finfo(np.float32).tiny)
    return (ratio * scale).astype(np.float32)


def sink_share(head_maps: np.ndarray, sink_maps: np.ndarray, level: float) -> np.ndarray:
    """[L, H]: share of each head's image attention (before sink removal) that falls on its
    sink tokens, the tokens where the same head's generic-prompt map exceeds `level` times
    its mean (sinks take a large share of any prompt's attention, so the generic prompt shows
    them)."""
    sinks = sink_maps > level * sink_maps.mean(-1, keepdims=True)
    total = head_maps.sum(-1)
    on_sinks = np.where(sinks, head_maps, 0.0).sum(-1)
    return np.where(total > 0, on_sinks / np.where(total > 0, total, 1.0), 1.0)


def localization_heads(clean: np.ndarray, shares: np.ndarray, k: int, max_share: float) -> np.ndarray:
    """[L, k] head indices per layer: among the heads whose sink share is at most `max_share`,
    the k with the lowest entropy of their sink-removed map `clean`; when fewer heads pass,
    the rest are the heads with the lowest sink share."""
    k = min(k, clean.shape[1])
    ent = entropy(clean)  # [L, H]
    passing = shares <= max_share
    # passing heads by entropy first, then the others by sink share
    key = np.where(passing, ent, np.inf)
    order = np.lexsort((shares, key), axis=1)
    return order[:, :k]


def aggregate_heads(head_maps: np.ndarray, mode: str, k: int, chosen: np.ndarray | None = None) -> np.ndarray:
    """[L, H, T] → [L, T]: mean over all heads, over the k lowest-entropy heads per layer, or
    ('localization') over the heads `chosen` [L, k] by `localization_heads`."""
    if mode == "mean":
        return head_maps.mean(1)
    if mode == "lowest_entropy":
        k = min(k, head_maps.shape[1])
        chosen = np.argsort(entropy(head_maps), axis=1, kind="stable")[:, :k]  # [L, k]
    elif mode != "localization":
        raise ValueError(f"unknown head aggregation {mode!r}")
    elif chosen is None:
        raise ValueError("head aggregation 'localization' needs the heads chosen with the generic-prompt maps")
    return np.take_along_axis(head_maps, chosen[:, :, None], axis=1).mean(1)


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
    sink_method: str = "ratio",
    sink_weight: float = 1.0,
    sink_level: float = 20.0,
    max_sink_share: float = 0.8,
    flat_ratio: float = 1.5,
) -> InstanceMaps:
    """Per-layer maps of one instance from its [L, H, T] head maps (steps 2-4 above).

    `sink_heads` [L, H, T]: the generic prompt's head maps (None = no sink removal);
    'localization' aggregation needs them (the sink share of each head).
    """
    chosen = None
    if sink_heads is not None:
        clean = remove_sink(heads, sink_heads, sink_epsilon, sink_method, sink_weight)
        if aggregation == "localization":
            chosen = localization_heads(clean, sink_share(heads, sink_heads, sink_level), k, max_sink_share)
        heads = clean
    maps = aggregate_heads(heads, aggregation, k, chosen).astype(np.float32)
    return InstanceMaps(maps, heads.astype(np.float32), fallback_flag(maps, flat_ratio))
