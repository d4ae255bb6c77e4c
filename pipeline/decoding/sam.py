"""The segmenter for the decode stage: load the one a run names, decode one image through the
segmenter interface (`pipeline.segmenters`).

Per image: ONE image embedding; the prompts of all its instances go through the mask decoder in
batched calls (queries = instances, chunks of `decode.max_queries_per_call`), and, with
`completion='decoder'` (EfficientSAM only), through the amodal decoder on the same embedding.
Per query the multimask output with the highest predicted IoU is kept, brought to the original
size by the family's own post-processing and thresholded at its `mask_threshold`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.datasets.skips import read_image_checked
from pipeline.decoding.params import SamModelParams
from pipeline.decoding.prompts import ImagePrompts
from pipeline.decoding.routing import route
from pipeline.segmenters import LoadRequest, PromptQueries, Segmenter, load_segmenter
from pipeline.segmenters.efficient_sam import EfficientSamSegmenter, image_tensor
from pipeline.segmenters.params import SegmenterParams

# EfficientSAM behind the interface; its constructor is (model, amodal_decoder, smoke, provenance)
SamModels = EfficientSamSegmenter


def load_sam_models(profile: str, params: SamModelParams, use_amodal_decoder: bool, device: str = "cpu",
                    segmenter: SegmenterParams | None = None, allow_download: bool = False) -> Segmenter:
    """The segmenter of `segmenter` (default EfficientSAM) for `profile` ('smoke' -> seeded random
    weights; 'real' -> its checkpoint, a missing one is an error, never random weights).

    `params` are EfficientSAM's own settings (models.efficient_sam). `device`: 'auto' = CUDA when
    available. `use_amodal_decoder` (decode.completion: decoder) is EfficientSAM's only: another
    family gets a one-line error.
    """
    segmenter = segmenter or SegmenterParams()
    if use_amodal_decoder and segmenter.family != EfficientSamSegmenter.family:
        from pipeline.errors import ParamsError

        raise ParamsError(f"decode.completion 'decoder' is EfficientSAM's amodal decoder; models.segmenter.family is "
                          f"{segmenter.family!r}: choose a training-free completion or exemplar")
    return load_segmenter(LoadRequest(segmenter.family, segmenter.id, profile, device, allow_download,
                                      use_amodal_decoder, params))


def load_image(path: str | os.PathLike, width: int, height: int, image_id: int) -> np.ndarray:
    """An RGB image file as uint8 [H, W, 3]; ImageSkipError (a DatasetError) naming the file and
    image id when it cannot be read or is not the annotated size."""
    return read_image_checked(path, width, height, image_id)


def rgb_pixels(image) -> np.ndarray:
    """uint8 RGB [H, W, 3] from that array or from a float [1, 3, H, W] tensor in [0, 1]."""
    if isinstance(image, torch.Tensor):
        return (image[0].permute(1, 2, 0) * 255.0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
    return np.ascontiguousarray(image)


@dataclass
class DecodedMasks:
    """Per query (instance) of one image: binary masks at the original size and predicted IoUs."""

    visible: np.ndarray  # bool [Q, H, W]
    visible_iou: np.ndarray  # float32 [Q]
    amodal: np.ndarray | None  # bool [Q, H, W] from the amodal decoder, or None
    amodal_iou: np.ndarray | None
    sent: list[dict] | None = None  # per query: points, labels and box actually sent
    object_score: np.ndarray | None = None  # float32 [Q] (SAM 2), else None


def decode_image(models: Segmenter, image, prompts: ImagePrompts | PromptQueries, max_queries_per_call: int | None = None,
                 negatives: str = "auto") -> DecodedMasks:
    """Visible (and, with an amodal decoder, amodal) masks of all prompted instances of one image.

    `image`: uint8 RGB [H, W, 3] (or a float [1, 3, H, W] tensor in [0, 1]); `prompts`: the
    sampler's `ImagePrompts`, routed under `negatives` (`routing.py`), or `PromptQueries` sent as given.
    """
    sent = None
    if isinstance(prompts, ImagePrompts):
        routed = route(prompts, negatives, models.trained_on_negatives)
        prompts, sent = routed.queries, routed.sent
    embedding = models.embed(rgb_pixels(image))
    visible = models.decode(embedding, prompts, max_queries_per_call)
    amodal = models.decode_amodal(embedding, prompts, max_queries_per_call) if models.has_amodal_decoder else None
    return DecodedMasks(visible.masks, visible.iou, None if amodal is None else amodal.masks,
                        None if amodal is None else amodal.iou, sent, visible.object_score)


__all__ = ["DecodedMasks", "SamModels", "decode_image", "image_tensor", "load_image", "load_sam_models", "rgb_pixels"]
