"""EfficientSAM prompt encoder: points and box corners → sparse tokens with random-Fourier positions.

Labels: 1 positive point, 0 negative point, 2 box top-left, 3 box bottom-right, -1 padding.
As in the official model, a negative point (0) gets its positional encoding only (no learned
embedding is added), and padding points keep their positional encoding plus `invalid_points`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.models.efficient_sam.image_encoder import EMBEDDING_SIZE, IMAGE_SIZE, NECK_DIM

LABEL_PADDING = -1
LABEL_NEGATIVE = 0
LABEL_POSITIVE = 1
LABEL_BOX_TOP_LEFT = 2
LABEL_BOX_BOTTOM_RIGHT = 3


class RandomFourierPositions(nn.Module):
    """Positional encoding sin/cos(2π · (2·xy − 1) @ G) with a fixed gaussian matrix G [2, D/2]."""

    def __init__(self, num_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_feats))

    def encode(self, xy01: torch.Tensor) -> torch.Tensor:
        """[..., 2] coordinates in [0, 1] (x, y) → [..., 2·num_feats]."""
        proj = (2 * xy01 - 1) @ self.positional_encoding_gaussian_matrix
        proj = 2 * math.pi * proj
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)

    def grid(self, h: int, w: int) -> torch.Tensor:
        """Encoding of the centres of an h×w grid: [D, h, w]."""
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        xy = torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)], dim=-1)
        return self.encode(xy).permute(2, 0, 1)


class PromptEncoder(nn.Module):
    """Sparse prompt tokens for the mask decoder, and the dense positional encoding of the image grid."""

    def __init__(self, embed_dim: int = NECK_DIM) -> None:
        super().__init__()
        self.input_image_size = (IMAGE_SIZE, IMAGE_SIZE)
        self.image_embedding_size = (EMBEDDING_SIZE, EMBEDDING_SIZE)
        self.pe_layer = RandomFourierPositions(embed_dim // 2)
        self.invalid_points = nn.Embedding(1, embed_dim)
        self.point_embeddings = nn.Embedding(1, embed_dim)
        self.bbox_top_left_embeddings = nn.Embedding(1, embed_dim)
        self.bbox_bottom_right_embeddings = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """[1, 256, 64, 64] positional encoding of the image-embedding grid."""
        return self.pe_layer.grid(*self.image_embedding_size).unsqueeze(0)

    def forward(self, points: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """points [N, P, 2] in 1024-input pixels (x, y), labels [N, P] → tokens [N, P, 256]."""
        h, w = self.input_image_size
        xy = points.to(torch.float32) + 0.5  # centre of the pixel
        xy01 = torch.stack([xy[..., 0] / w, xy[..., 1] / h], dim=-1)
        tokens = self.pe_layer.encode(xy01)
        learned = {
            LABEL_PADDING: self.invalid_points.weight[0],
            LABEL_POSITIVE: self.point_embeddings.weight[0],
            LABEL_BOX_TOP_LEFT: self.bbox_top_left_embeddings.weight[0],
            LABEL_BOX_BOTTOM_RIGHT: self.bbox_bottom_right_embeddings.weight[0],
        }
        for label, embedding in learned.items():
            tokens = tokens + (labels == label).unsqueeze(-1).to(tokens.dtype) * embedding
        return tokens
