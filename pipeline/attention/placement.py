"""Where every image token of a prompt sits in the original image.

`placement_for(model_config, processor, image_hw)` returns an `ImageTokenLayout`: for the
image-token positions of the prompt (`input_ids == image_token_id`, in sequence order) which
are spatial patches (`keep`), and for those the `TokenPlacement` of the attention cache:
view (0 = base / coarse, 1 = high-resolution canvas), row and column in the view's token grid,
and the rectangle in original-image pixels the token's vision patch covers.

The family of the model config (`pipeline.vlm_families`) lays its tokens out (`VlmFamily.place`,
checked against transformers' own feature packing in tests/test_vlm_families.py); this module
checks the count against the processor's own and packs the result. Rects are clipped to the
image; a token may cover part of the processor's padding. The layout assumes the processor is
called with its own default settings (no per-call image kwargs) and one image per prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.attention.cache import TokenPlacement
from pipeline.vlm_families import family_of_model_type
from pipeline.vlm_families._geometry import PlacementError
from pipeline.vlm_families._placement import Tokens, check_same

__all__ = [
    "ImageTokenLayout",
    "PlacementError",
    "image_token_positions",
    "placement_for",
]

@dataclass
class ImageTokenLayout:
    """Image tokens of one image in one prompt: which are spatial, and where they sit."""

    family: str
    image_hw: tuple[int, int]  # original image (height, width)
    image_token_id: int
    placement: TokenPlacement  # one row per kept image token, in sequence order
    keep: np.ndarray  # bool [n_image_tokens]: False for newline / CLS positions
    feature_box: np.ndarray  # float64 [T, 4] x0, y0, x1, y1 in the view's patch grid (view 1: padded canvas)
    view_shapes: dict[int, tuple[int, int]] = field(default_factory=dict)  # view -> (rows, cols)

    @property
    def n_image_tokens(self) -> int:
        """Image-token positions the processor inserts for this image (newlines included)."""
        return int(self.keep.shape[0])

    def image_positions(self, input_ids) -> np.ndarray:
        """Sequence positions of all image tokens of a single-prompt `input_ids` ([S] or [1, S])."""
        positions = image_token_positions(input_ids, self.image_token_id)
        if positions.shape[0] != self.n_image_tokens:
            raise PlacementError(
                f"the prompt holds {positions.shape[0]} image tokens (id {self.image_token_id}) but "
                f"the {self.family} layout of a {self.image_hw[0]}x{self.image_hw[1]} image has "
                f"{self.n_image_tokens}: prompt and image do not belong together"
            )
        return positions

    def kept_positions(self, input_ids) -> np.ndarray:
        """Sequence positions of the spatial image tokens, aligned with the placement rows."""
        return self.image_positions(input_ids)[self.keep]


def image_token_positions(input_ids, image_token_id: int) -> np.ndarray:
    """Positions (int64, ascending) where a single prompt's input_ids equal image_token_id."""
    ids = input_ids.detach().cpu().numpy() if hasattr(input_ids, "detach") else np.asarray(input_ids)
    if ids.ndim == 2:
        if ids.shape[0] != 1:
            raise PlacementError(f"expected one prompt, got input_ids of shape {tuple(ids.shape)}")
        ids = ids[0]
    if ids.ndim != 1:
        raise PlacementError(f"expected input_ids of shape [S] or [1, S], got {tuple(ids.shape)}")
    return np.flatnonzero(ids == int(image_token_id)).astype(np.int64)


def _processor_token_count(processor, image_hw) -> int:
    data = processor._get_num_multimodal_tokens(image_sizes=[list(image_hw)])
    return int(data.num_image_tokens[0])


def placement_for(model_config, processor, image_size_hw: tuple[int, int]) -> ImageTokenLayout:
    """Layout of the image tokens of one `image_size_hw` = (height, width) image.

    `model_config`: the VLM's config (`model.config`); `processor`: its processor (real class,
    default settings). Raises PlacementError when the family is unknown, the config and
    processor disagree, or the token count differs from the processor's own count.
    """
    model_type = getattr(model_config, "model_type", None)
    vlm_family = family_of_model_type(model_type)
    if vlm_family is None:
        raise PlacementError(f"no image-token placement for model_type {model_type!r} (not a registered VLM family)")
    family = vlm_family.name
    height, width = (int(v) for v in image_size_hw)
    if height <= 0 or width <= 0:
        raise PlacementError(f"invalid image size (height, width) = {tuple(image_size_hw)}")
    check_same(
        "vision_feature_select_strategy",
        getattr(model_config, "vision_feature_select_strategy", None),
        getattr(processor, "vision_feature_select_strategy", None),
    )
    image_hw = (height, width)
    tokens = Tokens()
    shapes = vlm_family.place(model_config, processor, image_hw, tokens)

    keep = np.asarray(tokens.keep, dtype=bool)
    expected = _processor_token_count(processor, image_hw)
    if keep.shape[0] != expected:
        raise PlacementError(
            f"{family}: placed {keep.shape[0]} image tokens for a {height}x{width} image but the "
            f"processor ({type(processor).__name__}) inserts {expected}"
        )
    n = int(keep.sum())
    placement = TokenPlacement(
        view=np.asarray(tokens.view, dtype=np.int8).reshape(n),
        row=np.asarray(tokens.row, dtype=np.int32).reshape(n),
        col=np.asarray(tokens.col, dtype=np.int32).reshape(n),
        rect=np.asarray(tokens.rect, dtype=np.float32).reshape(n, 4),
    )
    return ImageTokenLayout(
        family=family,
        image_hw=image_hw,
        image_token_id=int(model_config.image_token_id),
        placement=placement,
        keep=keep,
        feature_box=np.asarray(tokens.box, dtype=np.float64).reshape(n, 4),
        view_shapes=shapes,
    )
