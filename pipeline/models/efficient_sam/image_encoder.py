"""EfficientSAM image encoder: a plain ViT (patch 16, 1024² input) with a 256-channel conv neck."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.efficient_sam.layers import LayerNorm2d

IMAGE_SIZE = 1024
PATCH_SIZE = 16
EMBEDDING_SIZE = IMAGE_SIZE // PATCH_SIZE  # 64 tokens per side
PRETRAIN_GRID = 14  # pos_embed is stored for 224² pretraining: 14×14 + 1 class slot
NECK_DIM = 256


class PatchEmbed(nn.Module):
    """Non-overlapping 16×16 patches → `dim` channels (`proj`)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=PATCH_SIZE, stride=PATCH_SIZE, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Attention(nn.Module):
    """Global multi-head self-attention with a fused qkv projection (with bias)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        # scale 1/sqrt(head_dim), as the official; SDPA avoids materialising the 4096² matrix in full
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class FeedForward(nn.Module):
    """fc1 → GELU → fc2."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (LayerNorm eps 1e-6)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = FeedForward(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def resized_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """[1, 1 + g², D] stored embedding → [1, grid, grid, D]: class slot dropped, bicubic resize."""
    patch_pos = pos_embed[:, 1:]
    size = int(round(patch_pos.shape[1] ** 0.5))
    if size * size != patch_pos.shape[1]:
        raise ValueError(f"pos_embed has {patch_pos.shape[1]} patch positions, not a square grid")
    patch_pos = patch_pos.reshape(1, size, size, -1)
    if size == grid:
        return patch_pos
    resized = F.interpolate(patch_pos.permute(0, 3, 1, 2), size=(grid, grid), mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1)


class ImageEncoderViT(nn.Module):
    """[B, 3, 1024, 1024] normalised image → [B, 256, 64, 64] embedding."""

    def __init__(self, dim: int, num_heads: int, depth: int = 12, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.img_size = IMAGE_SIZE
        self.patch_embed = PatchEmbed(dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, PRETRAIN_GRID * PRETRAIN_GRID + 1, dim))
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio) for _ in range(depth))
        self.neck = nn.Sequential(
            nn.Conv2d(dim, NECK_DIM, kernel_size=1, bias=False),
            LayerNorm2d(NECK_DIM),
            nn.Conv2d(NECK_DIM, NECK_DIM, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(NECK_DIM),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"image encoder expects {IMAGE_SIZE}×{IMAGE_SIZE} input, got {tuple(x.shape[-2:])}")
        x = self.patch_embed(x).permute(0, 2, 3, 1)  # B, 64, 64, D
        b, h, w, d = x.shape
        x = (x + resized_pos_embed(self.pos_embed, h)).reshape(b, h * w, d)
        for block in self.blocks:
            x = block(x)
        return self.neck(x.reshape(b, h, w, d).permute(0, 3, 1, 2))
