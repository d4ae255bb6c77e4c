"""The segmenter interface: encode an image once, decode any number of prompt queries over it.

Every promptable segmenter family (EfficientSAM, SAM, SAM-HQ, SAM 2.1) is one module of this
package defining a `Segmenter` subclass (see `pipeline.segmenters` for registration). The decode
stage, the single-image API, located occluders, `vlmsam weights` and gpu_check use only this
interface and never name a family.

Conventions shared by every family
- Images are RGB uint8 numpy arrays [H, W, 3] at their original size (H, W).
- Prompt queries (`PromptQueries`) are in ORIGINAL-image pixels (x, y); each family scales them
  to its own input grid exactly as its own processor does (e.g. `SamProcessor`).
- Point labels: 1 positive, 0 negative, -1 padding. Padding entries (label -1) are not prompt
  points: a family drops them or passes them in the family's own padding form (EfficientSAM pads
  with (-1, -1)/-1; SAM's prompt encoder reads label -1 as its "not a point" embedding). Boxes are
  separate (`PromptQueries.boxes`), never label 2/3 points: a family that encodes a box as two
  corner points (EfficientSAM) does so itself.
- Multimask output: the decoder's multimask outputs (3 for every family here) are ranked by
  predicted IoU; the best one per query is returned, brought to the original size by the
  family's own post-processing and thresholded at the family's `mask_threshold` (logit > 0).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

LABEL_POSITIVE, LABEL_NEGATIVE, LABEL_PAD = 1, 0, -1


@dataclass(frozen=True)
class PromptQueries:
    """Q prompt queries of one image, in original-image pixels.

    points  float32 [Q, N, 2] (x, y); N may be 0 (box-only queries); rows with label -1 are padding
    labels  int64 [Q, N]: 1 positive, 0 negative, -1 padding (queries of unequal length are padded
            at the end)
    boxes   float32 [Q, 4] (x0, y0, x1, y1), or None when no query has a box
    Every query carries at least one point (label 0/1) or a box.
    """

    points: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def rows(self, start: int, stop: int) -> "PromptQueries":
        """Queries start..stop-1 (a chunk for one decoder call)."""
        boxes = None if self.boxes is None else self.boxes[start:stop]
        return PromptQueries(self.points[start:stop], self.labels[start:stop], boxes)


@dataclass
class ImageEmbedding:
    """One image encoded once by a segmenter; every decode call of that image reuses it.

    embeddings     the family's main image embedding on the model's device (batch of 1), e.g.
                   [1, 256, 64, 64] for EfficientSAM / SAM / SAM-HQ
    original_size  (H, W) of the image as given to `embed`
    input_size     (h, w) the image was resized to before padding (SAM's `reshaped_input_sizes`);
                   equal to the model's square input for families that resize without aspect
    extras         further tensors the family's decoder needs, by name, e.g. SAM-HQ's
                   'intermediate_embeddings' (list of ViT block outputs) or SAM 2's
                   'high_resolution_features'; a family's decoder must fail loudly if one it
                   needs is missing rather than silently skip a branch
    """

    embeddings: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class RawDecoderOutput:
    """What the mask decoder returns for Q queries, before any selection or resizing.

    low_res_logits  float [Q, M, h, w] mask logits at the decoder's resolution (256x256 for all
                    families here), exactly what transformers' forward returns as `pred_masks`
                    for one query (`pred_masks[0, 0]`)
    iou             float [Q, M] predicted IoUs (`iou_scores[0, 0]`)
    object_score    float [Q] object-score logits (SAM 2's `object_score_logits`), or None
    """

    low_res_logits: torch.Tensor
    iou: torch.Tensor
    object_score: torch.Tensor | None = None


@dataclass
class DecodedQueries:
    """Per query: the best multimask output at the original size."""

    masks: np.ndarray  # bool [Q, H, W]
    iou: np.ndarray  # float32 [Q]: predicted IoU of the kept output
    object_score: np.ndarray | None = None  # float32 [Q] (SAM 2), else None


class Segmenter(ABC):
    """A loaded promptable segmenter of one family.

    Class attributes every family sets:
      family                its registry name ('efficient_sam', 'sam', 'sam_hq', 'sam2')
      max_points            prompt points (positives + negatives) one query may carry, or None
                            for no fixed limit
      box_takes_points      True when a box is encoded as 2 of those `max_points` (EfficientSAM)
      trained_on_negatives  whether the family was trained with negative (label 0) points;
                            `decode.negatives: auto` sends label 0 only to families where True
      mask_threshold        logit threshold of a mask (0.0)
    Instance attributes set by `load`:
      smoke       True when the weights are seeded random (a smoke run; outputs say so)
      provenance  JSON-able dict: at least 'family', 'id' (hub id / folder / checkpoint, None for
                  smoke), 'profile'; the decode stage records it in its outputs
      device      torch.device of the model
    """

    family: ClassVar[str]
    max_points: ClassVar[int | None]
    box_takes_points: ClassVar[bool] = False
    trained_on_negatives: ClassVar[bool]
    mask_threshold: ClassVar[float] = 0.0

    smoke: bool
    provenance: dict
    device: torch.device

    # --- loading ---------------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def load(cls, request: "LoadRequest") -> "Segmenter":
        """The family's model for `request` (see `LoadRequest`).

        profile 'smoke': a tiny or full-width model with seeded random weights, `smoke=True`.
        profile 'real': weights from `request.model_id` (a local folder, or a hub id looked up in
        the Hugging Face cache; downloads only when `request.allow_download`), `smoke=False`.
        A missing checkpoint raises `pipeline.segmenters.SegmenterLoadError` naming the id and
        where to get it; a folder whose config is of another family (config.json `model_type`)
        or that misses a file raises it too, naming the file.
        """

    @classmethod
    def weight_rows(cls, model_id: str | None) -> list[dict]:
        """Rows for `vlmsam weights`: each {'name', 'id', 'where'} of a checkpoint this family
        would load for `model_id`. Default: none."""
        return []

    @classmethod
    def points_per_query(cls, with_box: bool) -> int | None:
        """Prompt points one query may carry beside its box (None: no fixed limit)."""
        if cls.max_points is None:
            return None
        return cls.max_points - (2 if with_box and cls.box_takes_points else 0)

    # --- real-width models with random weights (benchmarks) ------------------------------------
    real_width_variants: ClassVar[tuple[str, ...]] = ()  # published variants `seeded_real_width` builds

    @classmethod
    def seeded_real_width(cls, variant: str, device: str = "cpu", encoder_blocks: int | None = None) -> "Segmenter":
        """The published `variant` (one of `real_width_variants`) with seeded random weights
        (`smoke=True`), nothing downloaded: prompt encoder and mask decoder exactly as published;
        the image encoder at its published widths, cut to its first `encoder_blocks` blocks when
        given (the embedding and extras the decoder reads keep their real shapes; a family whose
        encoder is small may build it whole). For benchmarks of the decoder."""
        raise NotImplementedError(f"segmenter family {cls.family!r} has no real-width seeded build")

    # --- encode / decode -------------------------------------------------------------------------
    @abstractmethod
    def embed(self, image: np.ndarray) -> ImageEmbedding:
        """Encode one RGB uint8 image [H, W, 3] (original size) with the family's own
        preprocessing (resize, normalisation, padding as its image processor does)."""

    @abstractmethod
    def decode_raw(self, embedding: ImageEmbedding, queries: PromptQueries) -> RawDecoderOutput:
        """All `queries` through the prompt encoder and mask decoder in ONE batched call over
        `embedding` (multimask output). Points and boxes are scaled from original pixels to the
        model's grid as the family's processor does. For each query q the result equals the
        family's transformers forward `model(pixel_values, input_points=[[q points]],
        input_labels=[[q labels]], input_boxes=..., multimask_output=True)` run alone (to 1e-5),
        with q's padding (label -1) removed. A family whose prompt encoder attends over every
        token (SAM, SAM-HQ, SAM 2) therefore groups the queries by their number of real points
        and makes one call per group; `RawDecoderOutput` rows stay in query order."""

    @abstractmethod
    def upscale(self, embedding: ImageEmbedding, low_res_logits: torch.Tensor) -> torch.Tensor:
        """Low-res logits [Q, h, w] -> logits [Q, H, W] at `embedding.original_size` by the
        family's own post-processing (SAM: upsample to the padded input, crop to `input_size`,
        resize to the original size, as `SamImageProcessor.post_process_masks` before binarising)."""

    def decode(self, embedding: ImageEmbedding, queries: PromptQueries, max_queries_per_call: int | None = None) -> DecodedQueries:
        """Best-IoU mask per query at the original size; queries go through the decoder in chunks of
        `max_queries_per_call` (None: all in one call)."""
        return decode_in_chunks(self.decode_raw, self, embedding, queries, max_queries_per_call)

    # --- amodal decoder (EfficientSAM only) -----------------------------------------------------
    has_amodal_decoder: bool = False

    def decode_amodal(self, embedding: ImageEmbedding, queries: PromptQueries, max_queries_per_call: int | None = None) -> DecodedQueries:
        """Amodal masks from a second, learned mask decoder on the same embedding; only families
        loaded with one (`has_amodal_decoder`) implement it."""
        raise NotImplementedError(f"segmenter family {self.family!r} has no amodal decoder")


@dataclass(frozen=True)
class LoadRequest:
    """What to load: the `models.segmenter` parameters resolved for one run.

    family            registry name
    model_id          `models.segmenter.id`: hub id or local folder; None = the family's default
    profile           'smoke' | 'real'
    device            'auto' | 'cpu' | 'cuda' | 'cuda:N'
    allow_download    may fetch a hub id that is not in the cache
    amodal_decoder    also load an amodal decoder (EfficientSAM, `decode.completion: decoder`)
    options           family-specific settings (EfficientSAM: `SamModelParams` of
                      `models.efficient_sam`), None for the others
    """

    family: str
    model_id: str | None = None
    profile: str = "smoke"
    device: str = "cpu"
    allow_download: bool = False
    amodal_decoder: bool = False
    options: Any = None


def decode_in_chunks(decode_raw, segmenter: Segmenter, embedding: ImageEmbedding, queries: PromptQueries,
                     max_queries_per_call: int | None) -> DecodedQueries:
    """`decode_raw` over chunks of queries; per query the output with the highest predicted IoU,
    upscaled by `segmenter.upscale` and thresholded at `segmenter.mask_threshold`."""
    q = len(queries)
    height, width = embedding.original_size
    step = q if not max_queries_per_call else max_queries_per_call
    masks, ious, scores = [], [], []
    for start in range(0, q, max(step, 1)):
        raw = decode_raw(embedding, queries.rows(start, start + step))
        best = raw.iou.argmax(dim=1)
        rows = torch.arange(len(best), device=best.device)
        logits = segmenter.upscale(embedding, raw.low_res_logits[rows, best])
        masks.append((logits > segmenter.mask_threshold).cpu().numpy())
        ious.append(raw.iou[rows, best].float().cpu().numpy())
        if raw.object_score is not None:
            scores.append(raw.object_score.float().cpu().numpy().reshape(-1))
    if q == 0:
        return DecodedQueries(np.zeros((0, height, width), bool), np.zeros(0, np.float32))
    return DecodedQueries(np.concatenate(masks), np.concatenate(ious), np.concatenate(scores) if scores else None)
