"""EfficientSAM (ViT-T / ViT-S) behind the segmenter interface; the model is `pipeline.models.efficient_sam`.

It reads 6 prompt points per query, a box being 2 of them (corners, labels 2/3, put before the
points); it was NOT trained on negative points (yformer/EfficientSAM issues #17 and #64): label 0
gets only its positional encoding. Masks are upsampled bicubically from 256x256 to the original
size (the official `OUTPUT_UPSAMPLE_MODE`).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.models.efficient_sam import (
    DECODER_MAX_NUM_INPUT_POINTS,
    OUTPUT_UPSAMPLE_MODE,
    VARIANTS,
    build_seeded_efficient_sam,
    load_efficient_sam,
    load_mask_decoder,
)
from pipeline.models.efficient_sam.image_encoder import IMAGE_SIZE
from pipeline.segmenters.segmenter import (
    DecodedQueries,
    ImageEmbedding,
    LoadRequest,
    PromptQueries,
    RawDecoderOutput,
    Segmenter,
    decode_in_chunks,
)

log = logging.getLogger(__name__)
BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = 2, 3
PROMPT_TOKENS = "prompt_tokens"


def image_tensor(rgb: np.ndarray) -> torch.Tensor:
    """RGB uint8 pixels [H, W, 3] as EfficientSAM's input: float [1, 3, H, W] in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float().div_(255.0)


def corner_points(queries: PromptQueries) -> tuple[np.ndarray, np.ndarray]:
    """EfficientSAM's point lists: box corners (labels 2, 3) first when there are boxes, then the
    points; padding stays (-1, -1) / -1."""
    points, labels = queries.points.astype(np.float32), queries.labels.astype(np.int64)
    if queries.boxes is None:
        return points, labels
    q = len(queries)
    corners = queries.boxes.astype(np.float32).reshape(q, 2, 2)
    corner_labels = np.tile(np.array([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], np.int64), (q, 1))
    return np.concatenate([corners, points.reshape(q, -1, 2)], 1), np.concatenate([corner_labels, labels.reshape(q, -1)], 1)


class EfficientSamSegmenter(Segmenter):
    family = "efficient_sam"
    max_points = DECODER_MAX_NUM_INPUT_POINTS
    box_takes_points = True
    trained_on_negatives = False

    def __init__(self, model, amodal_decoder, smoke: bool, provenance: dict):
        self.model = model
        self.amodal_decoder = amodal_decoder
        self.has_amodal_decoder = amodal_decoder is not None
        self.smoke = smoke
        self.provenance = provenance
        self.device = next(model.parameters()).device

    @classmethod
    def load(cls, request: LoadRequest) -> "EfficientSamSegmenter":
        """`request.options` is the `SamModelParams` of models.efficient_sam; 'smoke' -> seeded random
        weights; 'real' -> the checkpoint of `pipeline.weights.resolve_efficient_sam` (models.segmenter.id,
        when set, is that checkpoint file). With `request.amodal_decoder` the amodal decoder comes from
        models.efficient_sam.amodal_decoder (required in the real profile; a copy of the seeded
        visible decoder in the smoke profile when not given)."""
        from pipeline.attention.vlm import resolve_device
        from pipeline.decoding.params import SamModelParams

        params = request.options if request.options is not None else SamModelParams()
        device = resolve_device(request.device)
        checkpoint = None
        if request.profile == "smoke":
            model = build_seeded_efficient_sam(params.variant)
            log.warning("SMOKE run: EfficientSAM %s has seeded random weights; outputs are marked smoke", params.variant)
        elif request.profile == "real":
            from pipeline.weights import resolve_efficient_sam

            checkpoint = resolve_efficient_sam(params.variant, request.model_id or params.checkpoint)
            model = load_efficient_sam(params.variant, checkpoint)
        else:
            raise ValueError(f"models.profile {request.profile!r}: expected 'smoke' or 'real'")
        amodal, amodal_path = None, None
        if request.amodal_decoder:
            if params.amodal_decoder is not None:
                amodal_path = Path(params.amodal_decoder)
                if not amodal_path.exists():
                    raise FileNotFoundError(f"{amodal_path}: amodal decoder weights not found (models.efficient_sam.amodal_decoder)")
                amodal = load_mask_decoder(amodal_path)
            elif request.profile == "smoke":
                amodal = copy.deepcopy(model.mask_decoder)
            else:
                raise ValueError(
                    "decode.completion='decoder' needs amodal decoder weights: set models.efficient_sam.amodal_decoder "
                    "to a mask-decoder state dict, or choose a training-free completion"
                )
            amodal = amodal.to(device).eval()
        provenance = {
            "family": cls.family,
            "id": None if checkpoint is None else str(checkpoint),
            "profile": request.profile,
            "variant": params.variant,
            "checkpoint": None if checkpoint is None else str(checkpoint),
            "amodal_decoder": None if amodal_path is None else str(amodal_path),
        }
        return cls(model.to(device).eval(), amodal, request.profile == "smoke", provenance)

    real_width_variants = tuple(VARIANTS)  # the smoke build is already the published ViT-T / ViT-S

    @classmethod
    def seeded_real_width(cls, variant: str, device: str = "cpu", encoder_blocks: int | None = None) -> "EfficientSamSegmenter":
        """EfficientSAM `variant` ('vitt' | 'vits') whole, seeded random weights (its encoders are small)."""
        from pipeline.decoding.params import SamModelParams

        return cls.load(LoadRequest(cls.family, profile="smoke", device=device, options=SamModelParams(variant)))

    @classmethod
    def weight_rows(cls, model_id: str | None) -> list[dict]:
        return []  # EfficientSAM's checkpoints are listed by `pipeline.weights` itself

    @torch.inference_mode()
    def embed(self, image: np.ndarray) -> ImageEmbedding:
        tensor = image_tensor(image).to(self.device)
        height, width = image.shape[:2]
        return ImageEmbedding(self.model.get_image_embeddings(tensor), (height, width), (IMAGE_SIZE, IMAGE_SIZE))

    def _raw(self, embedding: ImageEmbedding, queries: PromptQueries, decoder) -> RawDecoderOutput:
        points, labels = corner_points(queries)
        if points.shape[1] > DECODER_MAX_NUM_INPUT_POINTS:
            raise ValueError(f"{points.shape[1]} points per query (a box counts 2); EfficientSAM reads {DECODER_MAX_NUM_INPUT_POINTS}")
        height, width = embedding.original_size
        with torch.inference_mode():
            pts = torch.from_numpy(points)[None].to(self.device)
            labs = torch.from_numpy(labels)[None].to(self.device)
            tokens = self._tokens(embedding, pts, labs, height, width)
            logits, iou = self.model.decode(embedding.embeddings, tokens, multimask_output=True, mask_decoder=decoder)
        return RawDecoderOutput(logits[0], iou[0])

    def _tokens(self, embedding: ImageEmbedding, points, labels, height: int, width: int) -> torch.Tensor:
        """Prompt tokens of these points, encoded once per embedding: the amodal decoder reuses
        the visible decoder's (`extras['prompt_tokens']` keeps the last chunk's)."""
        key = (points.cpu().numpy().tobytes(), labels.cpu().numpy().tobytes(), tuple(points.shape))
        cached = embedding.extras.get(PROMPT_TOKENS)
        if cached is not None and cached[0] == key:
            return cached[1]
        tokens = self.model.encode_prompts(points, labels, height, width)
        embedding.extras[PROMPT_TOKENS] = (key, tokens)
        return tokens

    def decode_raw(self, embedding: ImageEmbedding, queries: PromptQueries) -> RawDecoderOutput:
        return self._raw(embedding, queries, None)

    def upscale(self, embedding: ImageEmbedding, low_res_logits: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return F.interpolate(low_res_logits[:, None], embedding.original_size, mode=OUTPUT_UPSAMPLE_MODE)[:, 0]

    def decode_amodal(self, embedding: ImageEmbedding, queries: PromptQueries, max_queries_per_call: int | None = None) -> DecodedQueries:
        if self.amodal_decoder is None:
            return super().decode_amodal(embedding, queries, max_queries_per_call)
        return decode_in_chunks(lambda e, q: self._raw(e, q, self.amodal_decoder), self, embedding, queries, max_queries_per_call)


FAMILY = EfficientSamSegmenter
