"""Per-category surface textures (stripes, noise, gradients, checkers) and the background."""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.synth.categories import Category


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a * (1 - t[..., None]) + b * t[..., None]


def texture(cat: Category, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """An HxWx3 float32 RGB patch in [0, 255] with the category's colours and pattern."""
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
    return np.clip(rgb * shade, 0, 255)


def background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A light tray-like HxWx3 float32 background: a soft gradient plus fine noise."""
    tone = rng.uniform(175, 225)
    tint = rng.uniform(-12, 12, 3)
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    g = xx * np.float32(rng.uniform(-20, 20) / w) + yy * np.float32(rng.uniform(-20, 20) / h)
    noise = rng.standard_normal((h, w), dtype=np.float32) * np.float32(3.0)
    shade = (g + noise)[..., None] + np.float32(tone) + tint.astype(np.float32)
    return np.clip(shade, 0, 255)
