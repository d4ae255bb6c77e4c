"""Small layers shared by the EfficientSAM parts (names follow the official state-dict keys)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a [B, C, H, W] tensor (eps 1e-6, as in the official neck)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MLP(nn.Module):
    """`num_layers` Linear+GELU layers (`layers.i.0`) then a plain Linear head (`fc`)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        in_dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(d, hidden_dim), nn.GELU()) for d in in_dims)
        self.fc = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.fc(x)


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

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, heads·d] → [B, heads, N, d]."""
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q [B, Tq, C], k and v [B, Tk, C] → [B, Tq, C]."""
        q, k, v = self.split_heads(self.q_proj(q)), self.split_heads(self.k_proj(k)), self.split_heads(self.v_proj(v))
        out = F.scaled_dot_product_attention(q, k, v)
        b, h, n, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * c))
