"""Per-category surface textures (stripes, noise, gradients, checkers) and the background."""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.synth.categories import Category


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a * (1 - t[..., None]) + b * t[..., None]


def texture(cat: Category, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """An HxWx3 uint8 RGB patch with the category's colours and pattern."""
    base = np.asarray(cat.colour, np.float32)
    accent = np.asarray(cat.accent, np.float32)
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    angle = rng.uniform(0, np.pi)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    if cat.texture == "stripes":
        period = rng.uniform(8, 20)
        t = (np.sin(2 * np.pi * u / period) > 0.3).astype(np.float32)
    elif cat.texture == "gradient":
        t = (u - u.min()) / max(float(np.ptp(u)), 1.0)
    elif cat.texture == "checker":
        cell = rng.uniform(6, 14)
        v = -xx * np.sin(angle) + yy * np.cos(angle)
        t = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32) * 0.8
    elif cat.texture == "noise":
        n = rng.standard_normal((h, w), dtype=np.float32)
        n = cv2.GaussianBlur(n, (0, 0), 2.5)
        t = np.clip(0.5 + n * 2.0, 0, 1)
    else:
        raise ValueError(f"unknown texture {cat.texture!r} for category {cat.name}")
    rgb = _mix(base, accent, np.broadcast_to(t, (h, w)))
    shade = 1.0 + 0.12 * (yy / max(h - 1, 1) - 0.5)[..., None] * rng.choice([-1.0, 1.0])
    return np.clip(rgb * shade + 0.5, 0, 255).astype(np.uint8)


def background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A light tray-like HxWx3 uint8 background: a soft linear gradient plus fine noise."""
    tone = rng.uniform(171, 221) + rng.uniform(-12, 12, 3)
    corners = np.clip(tone + rng.uniform(-10, 10, (2, 2, 1)), 0, 246).round().astype(np.uint8)
    plane = cv2.resize(corners, (w, h), interpolation=cv2.INTER_LINEAR)  # bilinear plane
    return cv2.add(plane, rng.integers(0, 9, size=(h, w, 3), dtype=np.uint8))  # saturating
