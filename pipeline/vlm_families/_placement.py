"""Building blocks of every family's image-token placement: the token accumulator and the
model/processor consistency check (the layout itself is `pipeline.attention.placement`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.vlm_families._geometry import PixelMap, PlacementError


@dataclass
class Tokens:
    """Accumulates image-token positions in sequence order."""

    keep: list = field(default_factory=list)
    view: list = field(default_factory=list)
    row: list = field(default_factory=list)
    col: list = field(default_factory=list)
    rect: list = field(default_factory=list)
    box: list = field(default_factory=list)

    def skip(self, count: int = 1) -> None:
        """`count` non-spatial positions (newline, CLS)."""
        self.keep.extend([False] * count)

    def add(self, view: int, rows, cols, rects, boxes) -> None:
        """Spatial tokens of `view`: grid rows/cols, original-pixel rects, feature-grid boxes."""
        n = len(rows)
        self.keep.extend([True] * n)
        self.view.extend([view] * n)
        self.row.extend(rows)
        self.col.extend(cols)
        self.rect.extend(np.asarray(rects).reshape(-1, 4))
        self.box.extend(np.asarray(boxes).reshape(-1, 4))


def check_same(what: str, model_value, processor_value) -> None:
    """PlacementError when the processor states `what` (not None) differently from the model config."""
    if processor_value is not None and model_value != processor_value:
        raise PlacementError(f"model config and processor disagree on {what}: {model_value!r} vs {processor_value!r}")


def grid_view(tokens: Tokens, view: int, pm: PixelMap, processed_hw, patch: int, image_hw,
              first_patch: int = 0) -> tuple[int, int]:
    """Append a plain patch grid of a processed frame (row-major from `first_patch`)."""
    rows_n, cols_n = processed_hw[0] // patch, processed_hw[1] // patch
    r, c = np.divmod(np.arange(first_patch, rows_n * cols_n), cols_n)
    boxes = np.stack([c, r, c + 1, r + 1], axis=1).astype(np.float64)
    tokens.add(view, r.tolist(), c.tolist(), pm.to_original(boxes * patch, image_hw), boxes)
    return rows_n, cols_n
