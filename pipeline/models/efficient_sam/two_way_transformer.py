"""The mask decoder's two-way transformer: prompt tokens and image tokens attend to each other.

Batching: B images with Q queries (instances) each. The image tokens enter once per image and
become per query in the first block's image-to-token update; the cross-attentions between
tokens and image tokens are computed as in `token_image_attention` (no per-query projection of
the 4096 image tokens), which gives the official results (tiling the image per query) up to
float rounding, for less work.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.efficient_sam.layers import MLP, DownsampledAttention
from pipeline.models.efficient_sam.token_image_attention import image_to_tokens, tokens_to_image


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention → token-to-image → token MLP → image-to-token (post-norm each)."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, skip_first_layer_pe: bool, downsample_rate: int = 2):
        super().__init__()
        self.self_attn = DownsampledAttention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = DownsampledAttention(dim, num_heads, downsample_rate)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_dim, dim, num_layers=1)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = DownsampledAttention(dim, num_heads, downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor, key_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """queries, query_pe [B, Q, T, C]; keys [B, 1 or Q, N, C]; key_pe [N, C]
        → (queries [B, Q, T, C], keys [B, Q, N, C])."""
        b, nq, t, c = queries.shape
        # Unlike SAM, EfficientSAM keeps the residual in the first layer too; it only skips the PE.
        if not self.skip_first_layer_pe:
            queries = queries + query_pe
        flat = queries.reshape(b * nq, t, c)
        queries = self.norm1(flat + self.self_attn(flat, flat, flat)).view(b, nq, t, c)
        keys_pe = keys + key_pe
        queries = self.norm2(queries + tokens_to_image(self.cross_attn_token_to_image, queries + query_pe, keys, keys_pe))
        queries = self.norm3(queries + self.mlp(queries))
        keys = image_to_tokens(self.cross_attn_image_to_token, keys_pe, queries + query_pe, queries, residual=keys)
        return queries, self.norm4(keys)


class TwoWayTransformer(nn.Module):
    """`depth` two-way blocks, then a final token-to-image attention and LayerNorm."""

    def __init__(self, dim: int = 256, depth: int = 2, num_heads: int = 8, mlp_dim: int = 2048, downsample_rate: int = 2):
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(dim, num_heads, mlp_dim, skip_first_layer_pe=(i == 0), downsample_rate=downsample_rate)
            for i in range(depth)
        )
        self.final_attn_token_to_image = DownsampledAttention(dim, num_heads, downsample_rate)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embedding [B, C, H, W], image_pe [1, C, H, W], point_embedding [B, Q, T, C]
        → (tokens [B, Q, T, C], image tokens [B, Q, H·W, C])."""
        b, c = image_embedding.shape[:2]
        if point_embedding.shape[0] != b:
            raise ValueError(f"{b} images for prompt tokens of shape {tuple(point_embedding.shape)}")
        keys = image_embedding.flatten(2).transpose(1, 2)[:, None]  # [B, 1, N, C]: shared by the queries
        key_pe = image_pe.flatten(2).transpose(1, 2)[0]
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        attended = tokens_to_image(self.final_attn_token_to_image, queries + point_embedding, keys, keys + key_pe)
        return self.norm_final_attn(queries + attended), keys
