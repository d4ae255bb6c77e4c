"""COCO RLE <-> box crops, without full-frame bitmaps.

A full-frame decode of a 1920x1440 mask costs milliseconds; completing an instance only
needs the masks inside its box. These functions read and write the part of an RLE inside a
pixel box (x0, y0, x1, y1), end exclusive, straight from the run lengths (column-major, as
COCO stores them).
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from pipeline.masks import to_compressed


def run_lengths(rle: dict) -> np.ndarray:
    """The run lengths of an RLE (background first), int64; parses COCO's compressed string
    (5-bit groups, continuation bit 0x20, sign bit 0x10, each count after the second
    stored as a difference to the count two before)."""
    counts = rle["counts"]
    if isinstance(counts, list):
        return np.asarray(counts, dtype=np.int64)
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    chars = np.frombuffer(counts, dtype=np.uint8).astype(np.int64) - 48
    if chars.size == 0:
        return np.zeros(0, dtype=np.int64)
    last = np.flatnonzero((chars & 0x20) == 0)  # last char of each value
    first = np.r_[0, last[:-1] + 1]
    group = np.repeat(np.arange(last.size), last - first + 1)
    shift = 5 * (np.arange(chars.size) - first[group])
    values = np.add.reduceat((chars & 0x1F) << shift, first)
    negative = (chars[last] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * (last - first + 1))[negative]
    out = values.copy()
    # counts[m] = x[m] + counts[m - 2] for m > 2: a running sum per parity from index 1 / 2
    out[1::2] = np.cumsum(values[1::2])
    out[2::2] = np.cumsum(values[2::2])
    return out


def decode_crop(rle: dict, box: tuple[int, int, int, int]) -> np.ndarray:
    """bool mask of the pixels of `rle` inside `box` = (x0, y0, x1, y1), inside the frame."""
    height, width = (int(v) for v in rle["size"])
    x0, y0, x1, y1 = box
    if not (0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height):
        raise ValueError(f"box {box} is not inside the {width}x{height} frame")
    counts = run_lengths(rle)
    ends = np.cumsum(counts)
    starts = ends - counts
    lo, hi = x0 * height, x1 * height
    fg_starts, fg_ends = starts[1::2], ends[1::2]
    keep = (fg_ends > lo) & (fg_starts < hi)
    s, e = np.clip(fg_starts[keep], lo, hi), np.clip(fg_ends[keep], lo, hi)
    # split each run into one segment per column it crosses
    first_col, last_col = s // height, (e - 1) // height
    n = last_col - first_col + 1
    run = np.repeat(np.arange(n.size), n)
    col = first_col[run] + (np.arange(run.size) - np.repeat(np.cumsum(n) - n, n))
    row_start = np.maximum(s[run] - col * height, 0)
    row_end = np.minimum(e[run] - col * height, height)
    rows = y1 - y0
    row_start = np.clip(row_start - y0, 0, rows)
    row_end = np.clip(row_end - y0, 0, rows)
    # the crop, column-major, as alternating background / foreground runs
    base = (col - x0) * rows
    bounds = np.concatenate([[0], np.stack([base + row_start, base + row_end], 1).ravel(), [(x1 - x0) * rows]])
    values = np.zeros(bounds.size - 1, dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, np.diff(bounds))
    return flat.reshape(x1 - x0, rows).T


def encode_crop(crop: np.ndarray, x0: int, y0: int, height: int, width: int) -> dict:
    """Compressed RLE (bytes counts) of a `height` x `width` frame that is `crop` at (x0, y0)
    and empty elsewhere."""
    crop = np.asarray(crop, dtype=bool)
    h, w = crop.shape
    padded = np.zeros((w, h + 2), dtype=np.int8)  # one column per row, a 0 above and below
    padded[:, 1:-1] = crop.T
    edges = np.diff(padded, axis=1)
    start_col, start_row = np.nonzero(edges == 1)
    end_col, end_row = np.nonzero(edges == -1)
    run_starts = (start_col + x0).astype(np.int64) * height + start_row + y0
    run_ends = (end_col + x0).astype(np.int64) * height + end_row + y0
    if run_starts.size == 0:
        counts = [height * width]
    else:
        # a run reaching a column's last frame row continues at the next column's first
        joined = run_starts[1:] == run_ends[:-1]
        run_starts = run_starts[np.r_[True, ~joined]]
        run_ends = run_ends[np.r_[~joined, True]]
        gaps = run_starts - np.r_[0, run_ends[:-1]]
        counts = np.stack([gaps, run_ends - run_starts], axis=1).ravel().tolist()
        if run_ends[-1] < height * width:
            counts.append(height * width - int(run_ends[-1]))
    return mask_utils.frPyObjects({"counts": counts, "size": [height, width]}, height, width)


def tight_box(rle: dict) -> tuple[int, int, int, int] | None:
    """Pixel box (x0, y0, x1, y1) of the foreground, end exclusive; None for an empty mask."""
    x, y, w, h = mask_utils.toBbox(to_compressed(rle))
    if w <= 0 or h <= 0:
        return None
    return int(x), int(y), int(x + w), int(y + h)


def union(a: dict, b: dict) -> dict:
    """Union of two RLEs of one frame, compressed with str counts (JSON-ready)."""
    out = mask_utils.merge([to_compressed(a), to_compressed(b)], intersect=False)
    out["counts"] = out["counts"].decode("ascii")
    return out
