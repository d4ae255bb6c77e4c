"""What EfficientSAM's prompt encoder reads: the one place these limits are defined.

EfficientSAM cuts every query's point list to its first `MAX_DECODER_POINTS` points (and pads
shorter ones); a box is two of those points (labels 2 and 3). The sampler never emits more
points than the decoder reads (`point_budget`), and the decode stage checks it again.
"""

from __future__ import annotations

MAX_DECODER_POINTS = 6  # points per query that reach EfficientSAM's mask decoder
BOX_POINTS = 2  # a box prompt is two points: top-left (label 2), bottom-right (label 3)
PROMPT_MODES = ("points", "box", "points+box")


def uses_box(prompt_mode: str) -> bool:
    """Whether `prompt_mode` (one of PROMPT_MODES) sends the instance's box to the decoder."""
    if prompt_mode not in PROMPT_MODES:
        raise ValueError(f"prompt_mode {prompt_mode!r}: expected one of {PROMPT_MODES}")
    return "box" in prompt_mode.split("+")


def point_budget(prompt_mode: str) -> int:
    """How many sampled points (positives + negatives) one query may carry in `prompt_mode`."""
    return MAX_DECODER_POINTS - (BOX_POINTS if uses_box(prompt_mode) else 0)
