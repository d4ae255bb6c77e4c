"""EfficientSAM for the decode stage: load the models of a profile, decode one image.

Per image: ONE image embedding; the prompts of all its instances are encoded once and go
through the visible (official) mask decoder in one batched call (queries = instances), and,
with `completion='decoder'`, through the amodal decoder on the same embedding and prompt
tokens. Of the 3 multimask outputs the one with the highest predicted IoU is kept, upsampled
to the original image size (the model's own `OUTPUT_UPSAMPLE_MODE`) and thresholded at the
model's `mask_threshold` (logit > 0).
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.datasets.skips import read_image_checked
from pipeline.decoding.params import SamModelParams
from pipeline.decoding.prompts import ImagePrompts
from pipeline.prompt_limits import MAX_DECODER_POINTS
from pipeline.models.efficient_sam import (
    OUTPUT_UPSAMPLE_MODE,
    EfficientSam,
    MaskDecoder,
    build_seeded_efficient_sam,
    load_efficient_sam,
    load_mask_decoder,
)

log = logging.getLogger(__name__)


@dataclass
class SamModels:
    """The loaded EfficientSAM (and optional amodal decoder) with their provenance."""

    model: EfficientSam
    amodal_decoder: MaskDecoder | None
    smoke: bool
    provenance: dict  # profile, variant, checkpoint, amodal_decoder (paths as str or None)


def load_sam_models(profile: str, params: SamModelParams, use_amodal_decoder: bool, device: str = "cpu") -> SamModels:
    """EfficientSAM for `profile`: 'smoke' -> seeded random weights; 'real' -> the checkpoint found
    by `pipeline.weights.resolve_efficient_sam` (a missing one is an error, never random weights).

    `device`: 'auto' = CUDA when available (`pipeline.attention.vlm.resolve_device`).
    With `use_amodal_decoder` the amodal decoder comes from `params.amodal_decoder`; required in
    the real profile, a copy of the seeded visible decoder in the smoke profile when not given.
    """
    from pipeline.attention.vlm import resolve_device

    device = resolve_device(device)
    if profile == "smoke":
        model = build_seeded_efficient_sam(params.variant)
        checkpoint = None
        log.warning("SMOKE run: EfficientSAM %s has seeded random weights; outputs are marked smoke", params.variant)
    elif profile == "real":
        from pipeline.weights import resolve_efficient_sam

        checkpoint = resolve_efficient_sam(params.variant, params.checkpoint)
        model = load_efficient_sam(params.variant, checkpoint)
    else:
        raise ValueError(f"models.profile {profile!r}: expected 'smoke' or 'real'")
    amodal, amodal_path = None, None
    if use_amodal_decoder:
        if params.amodal_decoder is not None:
            amodal_path = Path(params.amodal_decoder)
            if not amodal_path.exists():
                raise FileNotFoundError(f"{amodal_path}: amodal decoder weights not found (models.efficient_sam.amodal_decoder)")
            amodal = load_mask_decoder(amodal_path)
        elif profile == "smoke":
            amodal = copy.deepcopy(model.mask_decoder)
        else:
            raise ValueError(
                "decode.completion='decoder' needs amodal decoder weights: set models.efficient_sam.amodal_decoder "
                "to a mask-decoder state dict, or choose a training-free completion"
            )
        amodal = amodal.to(device).eval()
    provenance = {
        "profile": profile,
        "variant": params.variant,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "amodal_decoder": None if amodal_path is None else str(amodal_path),
    }
    return SamModels(model.to(device).eval(), amodal, profile == "smoke", provenance)


def load_image(path: str | os.PathLike, width: int, height: int, image_id: int) -> torch.Tensor:
    """An RGB image file as float [1, 3, H, W] in [0, 1]; ImageSkipError (a DatasetError) naming
    the file and image id when it cannot be read or is not the annotated size."""
    return image_tensor(read_image_checked(path, width, height, image_id))


def image_tensor(rgb: np.ndarray) -> torch.Tensor:
    """RGB uint8 [H, W, 3] pixels as EfficientSAM's input: float [1, 3, H, W] in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float().div_(255.0)


@dataclass
class DecodedMasks:
    """Per query (instance) of one image: binary masks at the original size and predicted IoUs."""

    visible: np.ndarray  # bool [Q, H, W]
    visible_iou: np.ndarray  # float32 [Q]
    amodal: np.ndarray | None  # bool [Q, H, W] from the amodal decoder, or None
    amodal_iou: np.ndarray | None


def _best_masks(model: EfficientSam, logits: torch.Tensor, iou: torch.Tensor, height: int, width: int):
    """logits [Q, 3, 256, 256], iou [Q, 3] -> (bool [Q, H, W], float [Q]) of the best-IoU output."""
    best = iou.argmax(dim=1)
    rows = torch.arange(len(best), device=best.device)
    chosen = logits[rows, best][:, None]  # [Q, 1, 256, 256]
    up = F.interpolate(chosen, (height, width), mode=OUTPUT_UPSAMPLE_MODE)[:, 0]
    return (up > model.mask_threshold).cpu().numpy(), iou[rows, best].float().cpu().numpy()


@torch.inference_mode()
def decode_image(models: SamModels, image: torch.Tensor, prompts: ImagePrompts, max_queries_per_call: int | None = None) -> DecodedMasks:
    """Visible (and, with an amodal decoder, amodal) masks of all prompted instances of one image."""
    if prompts.points.shape[1] > MAX_DECODER_POINTS:  # image_prompts already refuses this
        raise ValueError(f"{prompts.points.shape[1]} points per query; EfficientSAM reads {MAX_DECODER_POINTS}")
    model = models.model
    device = next(model.parameters()).device
    _, _, height, width = image.shape
    embedding = model.get_image_embeddings(image.to(device))
    points = torch.from_numpy(prompts.points)[None].to(device)
    labels = torch.from_numpy(prompts.labels)[None].to(device)
    tokens = model.encode_prompts(points, labels, height, width)  # [1, Q, 6, 256], once
    q = tokens.shape[1]
    step = q if max_queries_per_call is None else max_queries_per_call
    decoders = [None] + ([models.amodal_decoder] if models.amodal_decoder is not None else [])
    results = []
    for decoder in decoders:
        masks, ious = [], []
        for start in range(0, q, step):
            logits, iou = model.decode(embedding, tokens[:, start : start + step], multimask_output=True, mask_decoder=decoder)
            m, s = _best_masks(model, logits[0], iou[0], height, width)
            masks.append(m)
            ious.append(s)
        results.append((np.concatenate(masks), np.concatenate(ious)))
    amodal = results[1] if len(results) > 1 else (None, None)
    return DecodedMasks(results[0][0], results[0][1], amodal[0], amodal[1])
