"""EfficientSAM (ViT-T / ViT-S): image encoder, prompt encoder and mask decoder with the official
state-dict layout, so `efficient_sam_vitt.pt` / `efficient_sam_vits.pt` load with `strict=True`.

Semantics follow the official `EfficientSam` (yformer/EfficientSAM):
- images: RGB float in [0, 1], [B, 3, H, W]; resized bilinearly to 1024×1024 (no aspect
  preservation, no padding), normalised with the ImageNet mean/std.
- points: [B, Q, N, 2] input-pixel (x, y), scaled by 1024/W and 1024/H; a coordinate < 0 becomes -1.
  labels: [B, Q, N], see `prompt_encoder` (1 pos, 0 neg, 2/3 box corners, -1 padding).
- exactly `DECODER_MAX_NUM_INPUT_POINTS` (6) prompt points per query reach the decoder: shorter lists
  are padded with (-1, -1)/-1, LONGER LISTS ARE CUT TO THE FIRST 6 (official behaviour, kept here,
  with a warning). Callers in this project must never rely on the cut: check against the constant.
- masks are logits (threshold `mask_threshold` = 0); low resolution is 256×256; with output_h/w > 0
  they are upsampled with `OUTPUT_UPSAMPLE_MODE` (bicubic, as the official code).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.efficient_sam.checkpoint import load_strict, read_state_dict
from pipeline.models.efficient_sam.image_encoder import IMAGE_SIZE, ImageEncoderViT
from pipeline.models.efficient_sam.mask_decoder import MaskDecoder
from pipeline.models.efficient_sam.prompt_encoder import LABEL_PADDING, PromptEncoder
from pipeline.prompt_limits import MAX_DECODER_POINTS as DECODER_MAX_NUM_INPUT_POINTS  # 6

OUTPUT_UPSAMPLE_MODE = "bicubic"
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Variant:
    """Encoder size of one EfficientSAM release and its official checkpoint file name."""

    name: str
    encoder_dim: int
    encoder_heads: int
    checkpoint_name: str


VARIANTS: dict[str, Variant] = {
    "vitt": Variant("vitt", 192, 3, "efficient_sam_vitt.pt"),
    "vits": Variant("vits", 384, 6, "efficient_sam_vits.pt"),
}


def get_variant(name: str) -> Variant:
    """The `Variant` called `name`; a clear error for an unknown one."""
    if name not in VARIANTS:
        raise ValueError(f"unknown EfficientSAM variant {name!r}; choose one of {sorted(VARIANTS)}")
    return VARIANTS[name]


class EfficientSam(nn.Module):
    """EfficientSAM; see the module docstring for input conventions."""

    mask_threshold: float = 0.0

    def __init__(self, variant: str) -> None:
        super().__init__()
        spec = get_variant(variant)
        self.variant = spec.name
        self.image_encoder = ImageEncoderViT(spec.encoder_dim, spec.encoder_heads)
        self.prompt_encoder = PromptEncoder()
        self.mask_decoder = MaskDecoder()
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), persistent=False)

    # --- image -----------------------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] float in [0, 1] → normalised [B, 3, 1024, 1024]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"images must be float in [0, 1], got dtype {images.dtype}")
        if images.numel() and (images.min() < 0 or images.max() > 1):
            raise ValueError(
                f"images must be in [0, 1], got values in [{images.min().item():.3g}, {images.max().item():.3g}]"
            )
        if images.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
            images = F.interpolate(images, (IMAGE_SIZE, IMAGE_SIZE), mode="bilinear")
        return (images - self.pixel_mean) / self.pixel_std

    def get_image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] float in [0, 1] → image embeddings [B, 256, 64, 64]."""
        return self.image_encoder(self.preprocess(images))

    # --- prompts ---------------------------------------------------------------------------------
    def encode_prompts(self, points: torch.Tensor, labels: torch.Tensor, input_h: int, input_w: int) -> torch.Tensor:
        """points [B, Q, N, 2] (x, y input pixels), labels [B, Q, N] → prompt tokens [B, Q, 6, 256].

        Run once per batch of prompts; `decode` then takes these tokens with any mask decoder.
        """
        if points.ndim != 4 or points.shape[-1] != 2 or labels.shape != points.shape[:-1]:
            raise ValueError(f"points must be [B, Q, N, 2] and labels [B, Q, N], got {tuple(points.shape)} and {tuple(labels.shape)}")
        b, q, n, _ = points.shape
        points, labels = self.fit_to_decoder(self.rescale_points(points, input_h, input_w), labels)
        tokens = self.prompt_encoder(
            points.reshape(b * q, DECODER_MAX_NUM_INPUT_POINTS, 2), labels.reshape(b * q, DECODER_MAX_NUM_INPUT_POINTS)
        )
        return tokens.reshape(b, q, DECODER_MAX_NUM_INPUT_POINTS, -1)

    @staticmethod
    def rescale_points(points: torch.Tensor, input_h: int, input_w: int) -> torch.Tensor:
        """Input-pixel (x, y) → 1024-grid (x, y); coordinates < 0 become -1 (padding)."""
        x = torch.where(points[..., 0] >= 0, points[..., 0] * IMAGE_SIZE / input_w, -1.0)
        y = torch.where(points[..., 1] >= 0, points[..., 1] * IMAGE_SIZE / input_h, -1.0)
        return torch.stack([x, y], dim=-1)

    @staticmethod
    def fit_to_decoder(points: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad (or, officially, cut) the point axis to exactly `DECODER_MAX_NUM_INPUT_POINTS`."""
        n = points.shape[2]
        if n > DECODER_MAX_NUM_INPUT_POINTS:
            warnings.warn(
                f"{n} prompt points per query: EfficientSAM uses only the first {DECODER_MAX_NUM_INPUT_POINTS}",
                stacklevel=3,
            )
            return points[:, :, :DECODER_MAX_NUM_INPUT_POINTS], labels[:, :, :DECODER_MAX_NUM_INPUT_POINTS]
        pad = DECODER_MAX_NUM_INPUT_POINTS - n
        return F.pad(points, (0, 0, 0, pad), value=-1.0), F.pad(labels, (0, pad), value=LABEL_PADDING)

    # --- masks -----------------------------------------------------------------------------------
    def decode(
        self,
        image_embeddings: torch.Tensor,
        prompt_tokens: torch.Tensor,
        multimask_output: bool,
        output_h: int = -1,
        output_w: int = -1,
        mask_decoder: MaskDecoder | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks from embeddings [B, 256, 64, 64] and prompt tokens [B, Q, 6, 256] (from `encode_prompts`).

        `mask_decoder`: another decoder (e.g. amodal) to use instead of `self.mask_decoder`.
        Returns (mask logits [B, Q, M, h, w], IoU predictions [B, Q, M]); M = 3 if multimask else 1;
        h×w = 256×256, or output_h×output_w when both are > 0.
        """
        decoder = self.mask_decoder if mask_decoder is None else mask_decoder
        masks, iou = decoder(image_embeddings, self.prompt_encoder.get_dense_pe(), prompt_tokens, multimask_output)
        if output_h > 0 and output_w > 0:
            b, q, m, h, w = masks.shape
            masks = F.interpolate(masks.reshape(b * q, m, h, w), (output_h, output_w), mode=OUTPUT_UPSAMPLE_MODE)
            masks = masks.reshape(b, q, m, output_h, output_w)
        return masks, iou

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        points: torch.Tensor,
        labels: torch.Tensor,
        multimask_output: bool,
        input_h: int,
        input_w: int,
        output_h: int = -1,
        output_w: int = -1,
        mask_decoder: MaskDecoder | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`encode_prompts` then `decode`: (mask logits [B, Q, M, h, w], IoU predictions [B, Q, M])."""
        tokens = self.encode_prompts(points, labels, input_h, input_w)
        return self.decode(image_embeddings, tokens, multimask_output, output_h, output_w, mask_decoder)

    def forward(
        self, images: torch.Tensor, points: torch.Tensor, labels: torch.Tensor, scale_to_original_image_size: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """End to end as the official forward: multimask output, masks at the input size by default."""
        _, _, h, w = images.shape
        out_h, out_w = (h, w) if scale_to_original_image_size else (-1, -1)
        return self.predict_masks(self.get_image_embeddings(images), points, labels, True, h, w, out_h, out_w)


def build_efficient_sam(variant: str) -> EfficientSam:
    """A randomly initialised EfficientSAM of `variant` ("vitt" | "vits"), in eval mode."""
    return EfficientSam(variant).eval()


def load_efficient_sam(variant: str, checkpoint: str | os.PathLike) -> EfficientSam:
    """EfficientSAM `variant` with the weights of `checkpoint` (.pt/.pth/.safetensors), strict, eval mode."""
    model = EfficientSam(variant)
    load_strict(model, read_state_dict(Path(checkpoint)), checkpoint)
    return model.eval()
