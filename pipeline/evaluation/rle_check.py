"""Strict validation of COCO RLEs before any pycocotools C routine sees them.

pycocotools decodes a compressed `counts` string without checking it: a truncated or
corrupted string, or runs that do not add up to height x width, give a wrong mask (or
worse) silently. `rle_problem` decodes the run lengths itself (vectorised numpy, the
same LEB128-like scheme as pycocotools' `rleFrString`) and says what is wrong.
"""

from __future__ import annotations

import numpy as np

# Longest run-length group we accept: 7 chars x 5 bits = 35 bits, beyond any image size.
_MAX_GROUP_CHARS = 7


class RleError(ValueError):
    """A malformed RLE; the message says how."""


def run_lengths(counts: str | bytes) -> np.ndarray:
    """Decode a compressed COCO RLE `counts` string into its run lengths (int64).

    Raises `RleError` on characters outside the alphabet, a truncated last group,
    an overlong group or a negative run.
    """
    raw = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    c = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, dtype=np.int64)
    if c.min() < 0 or c.max() > 63:
        raise RleError("counts string has characters outside the RLE alphabet '0'..'o'")
    more = (c & 0x20) != 0
    if more[-1]:
        raise RleError("counts string is truncated (last character continues a run)")
    ends = ~more
    starts = np.flatnonzero(np.concatenate(([True], ends[:-1])))
    lengths = np.diff(np.append(starts, c.size))
    if lengths.max() > _MAX_GROUP_CHARS:
        raise RleError("counts string has a run encoded in more than 7 characters")
    group = np.repeat(np.arange(starts.size), lengths)
    shift = 5 * (np.arange(c.size) - starts[group])
    x = np.add.reduceat((c & 0x1F) << shift, starts)
    negative = (c[ends] & 0x10) != 0
    x[negative] -= np.left_shift(1, 5 * lengths[negative])
    # Runs from index 3 on are stored as differences to the run two places earlier.
    runs = x.copy()
    runs[1::2] = np.cumsum(x[1::2])
    runs[2::2] = np.cumsum(x[2::2])
    if runs.min() < 0:
        raise RleError(f"counts decode to a negative run ({int(runs.min())})")
    return runs


def rle_problem(rle: dict, height: int, width: int) -> str | None:
    """What is wrong with `rle` as the mask of a height x width image, or None when valid.

    Accepts compressed (str/bytes `counts`) and uncompressed (list `counts`) RLEs.
    """
    size = rle.get("size")
    if not (isinstance(size, (list, tuple)) and len(size) == 2):
        return f"RLE 'size' must be [height, width], got {size!r}"
    if [_as_int(size[0]), _as_int(size[1])] != [height, width]:
        return f"RLE size {list(size)} differs from the image size [{height}, {width}]"
    counts = rle.get("counts")
    if isinstance(counts, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts):
            return "uncompressed RLE counts must be non-negative integers"
        total = sum(counts)
    elif isinstance(counts, (str, bytes)):
        try:
            total = int(run_lengths(counts).sum())
        except (RleError, UnicodeEncodeError) as e:
            return f"bad RLE counts: {e}"
    else:
        return f"RLE counts must be a string or a list, got {type(counts).__name__}"
    if total != height * width:
        return f"RLE runs cover {total} pixels, but a {height}x{width} image has {height * width}"
    return None


def _as_int(v) -> int | None:
    return int(v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else None
