"""Cross-attention between each query's few prompt tokens and the 64×64 image tokens, without
projecting the image tokens once per query.

In the mask decoder's two-way transformer the image tokens `x` [B, Qx, N, C] are the same for
all queries of an image in the first block (Qx = 1) and differ per query afterwards (Qx = Q, each
query updated them). The official code tiles the image per query and projects all N = 4096 image
tokens through q/k/v_proj (and back through out_proj) for every query: most of the decoder's work.

Shared image tokens (Qx = 1) are projected once per image and attended to by all queries.
Per-query image tokens are never projected: the projections move to the token side (T ≈ 11
tokens), by identities that hold exactly in real arithmetic (float rounding differs, ~1e-6):

  tokens → image, per head h (scores q Wkᵀ(x+pe)ᵀ/√d; values x Wvᵀ + bv):
      q·bk is constant along the softmax axis, so scores = (q Wk)(x+pe)ᵀ/√d;
      rows of A sum to 1, so A (x Wvᵀ + 1 bvᵀ) = (A x) Wvᵀ + bv.
  image → tokens, per head h (scores ((x+pe) Wqᵀ + bq) kᵀ/√d; output Σ_h A_h v_h Wo,hᵀ + bo):
      scores = (x+pe)(Wqᵀ kᵀ)/√d + bq kᵀ/√d;  A_h (v_h Wo,hᵀ) is one matmul over (head, token).
Large per-query tensors are allocated as few times as possible (CPU allocation of fresh
multi-MB tensors costs about as much as the arithmetic).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.models.efficient_sam.layers import DownsampledAttention


def tokens_to_image(attn: DownsampledAttention, q: torch.Tensor, x: torch.Tensor, x_pe: torch.Tensor) -> torch.Tensor:
    """Tokens attend to image tokens: q [B, Q, T, C] (tokens + their PE), values x and keys
    x_pe = x + PE, both [B, Qx, N, C] with Qx ∈ {1, Q} → [B, Q, T, C]."""
    b, nq, t, c = q.shape
    heads, internal = attn.num_heads, attn.q_proj.out_features
    d = internal // heads
    q = attn.q_proj(q)
    if x.shape[1] == 1:  # one set of image tokens per image: project it once, all queries' rows attend to it
        k, v = attn.k_proj(x_pe[:, 0]), attn.v_proj(x[:, 0])
        out = F.scaled_dot_product_attention(
            attn.split_heads(q.reshape(b, nq * t, internal)), attn.split_heads(k), attn.split_heads(v)
        )
        return attn.out_proj(out.transpose(1, 2).reshape(b, nq, t, internal))
    _check_per_query(x, nq)
    w_k = attn.k_proj.weight.view(heads, d, c)
    q_wk = torch.einsum("bqthd,hdc->bqhtc", q.view(b, nq, t, heads, d) * d**-0.5, w_k).reshape(b, nq, heads * t, c)
    weights = (q_wk @ x_pe.transpose(-1, -2)).softmax(-1)  # [B, Q, H·T, N]
    pooled = (weights @ x).view(b, nq, heads, t, c)  # A x, per head
    w_v = attn.v_proj.weight.view(heads, d, c)
    out = torch.einsum("bqhtc,hdc->bqthd", pooled, w_v).reshape(b, nq, t, internal) + attn.v_proj.bias
    return attn.out_proj(out)


def image_to_tokens(
    attn: DownsampledAttention, x_pe: torch.Tensor, k: torch.Tensor, v: torch.Tensor, residual: torch.Tensor
) -> torch.Tensor:
    """Image tokens attend to tokens, plus the residual: queries x_pe = image tokens + PE
    [B, Qx, N, C] (Qx ∈ {1, Q}), keys k (tokens + their PE) and values v [B, Q, T, C], residual
    (the image tokens) [B, Qx, N, C] → residual + attention output [B, Q, N, C]."""
    b, nq, t, c = k.shape
    heads, internal = attn.num_heads, attn.q_proj.out_features
    d = internal // heads
    k = attn.k_proj(k).view(b, nq, t, heads, d) * d**-0.5
    w_o = attn.out_proj.weight.view(c, heads, d)
    v_wo = torch.einsum("bqthd,chd->bqhtc", attn.v_proj(v).view(b, nq, t, heads, d), w_o).reshape(b, nq, heads * t, c)
    if x_pe.shape[1] == 1:  # shared image tokens: project them once per image
        q = attn.q_proj(x_pe[:, 0]).view(b, -1, heads, d)
        scores = torch.einsum("bqthd,bnhd->bqhtn", k, q)
    else:
        _check_per_query(x_pe, nq)
        w_q = attn.q_proj.weight.view(heads, d, c)
        k_wq = torch.einsum("bqthd,hdc->bqhtc", k, w_q).reshape(b, nq, heads * t, c)
        scores = (k_wq @ x_pe.transpose(-1, -2)).view(b, nq, heads, t, -1)
        scores += torch.einsum("bqthd,hd->bqht", k, attn.q_proj.bias.view(heads, d))[..., None]
    # softmax over the tokens (dim -2: far faster on CPU than a last axis of ~11)
    weights = scores.softmax(-2).reshape(b, nq, heads * t, -1)
    out = weights.transpose(-1, -2) @ v_wo
    out += attn.out_proj.bias
    out += residual
    return out


def _check_per_query(x: torch.Tensor, queries: int) -> None:
    if x.shape[1] != queries:
        raise ValueError(f"image tokens for {x.shape[1]} queries, tokens for {queries}")
