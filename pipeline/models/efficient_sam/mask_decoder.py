"""EfficientSAM mask decoder: prompt tokens + image embedding → 256×256 mask logits and IoU predictions.

It can run on its own (e.g. a second, amodal decoder with the same architecture) on prompt tokens
made once by the prompt encoder; see `EfficientSam.encode_prompts` / `EfficientSam.decode`.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from pipeline.models.efficient_sam.checkpoint import load_strict, read_state_dict
from pipeline.models.efficient_sam.image_encoder import NECK_DIM
from pipeline.models.efficient_sam.layers import MLP
from pipeline.models.efficient_sam.two_way_transformer import TwoWayTransformer

NUM_MULTIMASK_OUTPUTS = 3
UPSCALING_DIMS = (64, 32)  # two ×2 transposed convolutions: 64² → 256² low-resolution masks
IOU_HEAD_DEPTH = 3
STATE_DICT_PREFIX = "mask_decoder."  # the decoder's keys inside a full EfficientSAM state dict


class MaskDecoder(nn.Module):
    """Mask decoder with 4 mask tokens: index 0 for the single-mask output, 1..3 for multimask."""

    def __init__(self, dim: int = NECK_DIM) -> None:
        super().__init__()
        self.num_mask_tokens = NUM_MULTIMASK_OUTPUTS + 1
        self.transformer = TwoWayTransformer(dim)
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        layers, in_dim = [], dim
        for i, out_dim in enumerate(UPSCALING_DIMS):
            last = i == len(UPSCALING_DIMS) - 1
            layers.append(
                nn.Sequential(
                    nn.ConvTranspose2d(in_dim, out_dim, kernel_size=2, stride=2),
                    nn.Identity() if last else nn.GroupNorm(1, out_dim),
                    nn.GELU(),
                )
            )
            in_dim = out_dim
        self.final_output_upscaling_layers = nn.ModuleList(layers)
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, in_dim, num_layers=2) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(dim, dim, self.num_mask_tokens, num_layers=IOU_HEAD_DEPTH - 1)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embeddings [B, C, 64, 64], image_pe [1, C, 64, 64], prompt tokens [B, Q, P, C]
        → (mask logits [B, Q, M, 256, 256], IoU predictions [B, Q, M]); M = 3 (multimask) or 1."""
        b, q, p, c = sparse_prompt_embeddings.shape
        if image_embeddings.shape[0] != b:
            raise ValueError(f"{image_embeddings.shape[0]} image embeddings for a prompt batch of {b}")
        masks, iou = self.predict_all_masks(image_embeddings, image_pe, sparse_prompt_embeddings)
        picked = slice(1, None) if multimask_output else slice(0, 1)
        masks, iou = masks[:, picked], iou[:, picked]
        return masks.reshape(b, q, *masks.shape[1:]), iou.reshape(b, q, -1)

    def predict_all_masks(
        self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, prompt_tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embeddings [B, C, H, W], prompt_tokens [B, Q, P, C] → masks [B·Q, 4, 4H, 4W], IoU [B·Q, 4]."""
        hs, src = self.transformer(image_embeddings, image_pe, self.with_output_tokens(prompt_tokens))
        return self.masks_and_iou(hs.flatten(0, 1), src.flatten(0, 1), *image_embeddings.shape[-2:])

    def with_output_tokens(self, prompt_tokens: torch.Tensor) -> torch.Tensor:
        """prompt tokens [B, Q, P, C] → [B, Q, 5 + P, C]: the IoU token and 4 mask tokens first."""
        b, q = prompt_tokens.shape[:2]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        return torch.cat([output_tokens.expand(b, q, -1, -1), prompt_tokens], dim=2)

    def masks_and_iou(self, hs: torch.Tensor, src: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Transformer outputs per query, tokens hs [n, T, C] and image tokens src [n, h·w, C]
        → masks [n, 4, 4h, 4w] (upscaled image tokens · hypernetwork of each mask token), IoU [n, 4]."""
        n, _, c = src.shape
        upscaled = src.transpose(1, 2).reshape(n, c, h, w)
        for layer in self.final_output_upscaling_layers:
            upscaled = layer(upscaled)
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens]
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        n, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(n, c, h * w)).reshape(n, -1, h, w)
        return masks, self.iou_prediction_head(hs[:, 0])


def build_mask_decoder() -> MaskDecoder:
    """A randomly initialised mask decoder in eval mode."""
    return MaskDecoder().eval()


DECODER_WRAPPERS = ("model", "decoder")  # {key: state_dict} layouts of a mask-decoder file


def load_mask_decoder(path: str | os.PathLike) -> MaskDecoder:
    """A mask decoder with weights from `path` (.pt/.pth/.safetensors), strict.

    Keys are the decoder's own (`transformer.…`), or all carry the `mask_decoder.` prefix they have
    inside a full EfficientSAM state dict; the file may wrap them as `{"model": ...}` or
    `{"decoder": ...}` (the layout SAMEO's research code saves). Anything else (e.g. a whole
    EfficientSAM checkpoint) is an error.
    """
    state_dict = read_state_dict(path, DECODER_WRAPPERS)
    if state_dict and all(k.startswith(STATE_DICT_PREFIX) for k in state_dict):
        state_dict = {k[len(STATE_DICT_PREFIX):]: v for k, v in state_dict.items()}
    decoder = MaskDecoder()
    load_strict(decoder, state_dict, path)
    return decoder.eval()
