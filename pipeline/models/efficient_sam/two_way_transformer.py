"""The mask decoder's two-way transformer: prompt tokens and image tokens attend to each other.

Batching: the prompt tokens have one row per query (B·Q), the image tokens may come in with one
row per image (B). Whatever does not depend on the query (the image tokens' projections in the
first block) is then computed once per image and repeated to the queries of that image
(rows b·Q … b·Q + Q − 1), which gives the same numbers as tiling the image first, for less work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.efficient_sam.layers import MLP


def repeat_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """Per-image rows [B, ...] → per-query rows [rows, ...] (each repeated rows/B times in place)."""
    if x.shape[0] == rows:
        return x
    if rows % x.shape[0]:
        raise ValueError(f"cannot spread a batch of {x.shape[0]} over {rows} rows")
    return x.repeat_interleave(rows // x.shape[0], dim=0)


class DownsampledAttention(nn.Module):
    """Multi-head attention whose q/k/v live in `dim // downsample_rate` channels."""

    def __init__(self, dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        internal_dim = dim // downsample_rate
        if internal_dim % num_heads:
            raise ValueError(f"{num_heads} heads do not divide {internal_dim} channels")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, internal_dim)
        self.k_proj = nn.Linear(dim, internal_dim)
        self.v_proj = nn.Linear(dim, internal_dim)
        self.out_proj = nn.Linear(internal_dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q [Nq, Tq, C], k and v [Nk, Tk, C]: batches of one size or per image / per query (see module doc)."""
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        rows = max(q.shape[0], k.shape[0], v.shape[0])
        out = F.scaled_dot_product_attention(repeat_rows(q, rows), repeat_rows(k, rows), repeat_rows(v, rows))
        b, h, n, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * c))


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
        # Unlike SAM, EfficientSAM keeps the residual in the first layer too; it only skips the PE.
        if not self.skip_first_layer_pe:
            queries = queries + query_pe
        queries = self.norm1(queries + self.self_attn(queries, queries, queries))
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        image_update = self.cross_attn_image_to_token(k, q, queries)
        keys = self.norm4(repeat_rows(keys, image_update.shape[0]) + image_update)
        return queries, keys


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
        """image_embedding [B, C, H, W], image_pe [1, C, H, W], point_embedding [B·Q, T, C]
        → (tokens [B·Q, T, C], image tokens [B·Q, H·W, C])."""
        keys = image_embedding.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        q, k = queries + point_embedding, keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, repeat_rows(keys, queries.shape[0])
