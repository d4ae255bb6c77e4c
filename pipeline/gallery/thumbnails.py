"""A card's two images: the crop with contours and points (JPEG) and its attention (RGBA PNG)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.atomic import atomic_path

# BGR colours of the contours, named as the page's legend names them
CONTOURS = {
    "gt_amodal": (255, 255, 255),
    "gt_visible": (0, 215, 255),
    "pred_amodal": (255, 0, 255),
    "pred_visible": (0, 200, 0),
}
POSITIVE, NEGATIVE = (0, 220, 0), (0, 0, 255)
JPEG_QUALITY = 85


@dataclass(frozen=True)
class CardImage:
    """What one card draws, all in original-image pixels."""

    rgb: np.ndarray  # uint8 [H, W, 3]
    box_xywh: tuple[float, float, float, float]
    masks: dict[str, np.ndarray]  # CONTOURS key -> bool [H, W]
    points: np.ndarray  # float [N, 2] x, y
    labels: np.ndarray  # int [N] 1 positive, 0 negative
    attention: np.ndarray | None  # float [H, W], any scale


def crop_window(box_xywh, width: int, height: int, margin: float) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 (exclusive) of the box grown by `margin` x its larger side, in the image."""
    x, y, w, h = box_xywh
    pad = margin * max(w, h)
    x0, y0 = max(0, int(np.floor(x - pad))), max(0, int(np.floor(y - pad)))
    x1, y1 = min(width, int(np.ceil(x + w + pad))), min(height, int(np.ceil(y + h + pad)))
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def write_card_images(card: CardImage, crop_path: str | os.PathLike, attention_path: str | os.PathLike,
                      margin: float, thumb_px: int) -> tuple[int, int]:
    """Write the crop JPEG and the attention PNG (same size, atomically); returns (width, height)."""
    height, width = card.rgb.shape[:2]
    x0, y0, x1, y1 = crop_window(card.box_xywh, width, height, margin)
    scale = thumb_px / max(x1 - x0, y1 - y0)
    size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
    crop = cv2.resize(np.ascontiguousarray(card.rgb[y0:y1, x0:x1, ::-1]), size, interpolation=cv2.INTER_AREA)
    for name, colour in CONTOURS.items():
        mask = card.masks.get(name)
        if mask is None:
            continue
        m = cv2.resize(mask[y0:y1, x0:x1].astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(crop, contours, -1, colour, 2 if name.startswith("pred") else 1, cv2.LINE_AA)
    bx, by, bw, bh = card.box_xywh
    cv2.rectangle(crop, _px(bx, by, x0, y0, scale), _px(bx + bw, by + bh, x0, y0, scale), (200, 200, 200), 1)
    for (px, py), label in zip(card.points, card.labels):
        centre = _px(px, py, x0, y0, scale)
        cv2.circle(crop, centre, 6, (0, 0, 0), -1, cv2.LINE_AA)
        cv2.circle(crop, centre, 4, POSITIVE if label == 1 else NEGATIVE, -1, cv2.LINE_AA)
        if label != 1:
            cv2.drawMarker(crop, centre, (255, 255, 255), cv2.MARKER_TILTED_CROSS, 7, 1)
    _write(crop_path, ".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    _write(attention_path, ".png", _heatmap(card.attention, (y0, y1, x0, x1), size), [])
    return size


def _px(x: float, y: float, x0: int, y0: int, scale: float) -> tuple[int, int]:
    return int(round((x - x0) * scale)), int(round((y - y0) * scale))


def _heatmap(attention: np.ndarray | None, window, size) -> np.ndarray:
    """BGRA: jet colours, alpha rising with the attention normalised over the crop."""
    y0, y1, x0, x1 = window
    if attention is None:
        return np.zeros((size[1], size[0], 4), np.uint8)
    a = cv2.resize(np.asarray(attention, np.float32)[y0:y1, x0:x1], size, interpolation=cv2.INTER_LINEAR)
    a = np.nan_to_num(a, nan=0.0)
    lo, hi = float(a.min()), float(a.max())
    a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    level = (a * 255).astype(np.uint8)
    bgr = cv2.applyColorMap(level, cv2.COLORMAP_JET)
    alpha = (60 + 160 * a).astype(np.uint8)
    return np.dstack([bgr, alpha])


def _write(path: str | os.PathLike, ext: str, image: np.ndarray, flags: list) -> None:
    ok, buf = cv2.imencode(ext, image, flags)
    if not ok:
        raise RuntimeError(f"{path}: the image could not be encoded")
    with atomic_path(Path(path)) as tmp:
        Path(tmp).write_bytes(buf.tobytes())
