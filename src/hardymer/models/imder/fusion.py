"""MulT's transformer and IMDer's MulT fusion, batch-first, over the utterances of a sequence.

The reference (``mdswyz/IMDer``) imports MMSA's ``subNets/transformers_encoder/transformer.py``,
MulT's (Tsai et al., ACL 2019) fairseq-derived encoder: inputs scaled by sqrt(D), sinusoidal
positions added (fairseq form: positions 1..L, ``[sin | cos]`` halves), embedding dropout, then
pre-LayerNorm layers (one LayerNorm for the query and the keys, multi-head attention with
attention dropout, residual dropout; ReLU MLP of width 4D with ReLU dropout) and a final
LayerNorm. ``attn_mask=True`` (IMDer's config) is a causal mask: position i attends to keys at
positions <= i.

Ours: ``mask`` (B, L) marks the real positions; keys at padding are never attended to, so a
real position's output does not depend on the padding. The reference's positional embedding
skips time steps whose first feature is exactly 0 (fairseq's padding index); ours gives every
real position its position.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import additive_mask


def sinusoidal_positions(length: int, dim: int, device, dtype=torch.float32) -> torch.Tensor:
    """fairseq's sinusoidal embedding of positions 1..length: (length, dim)."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, device=device, dtype=torch.float32)
                     * -(math.log(10000.0) / max(half - 1, 1)))
    arg = torch.arange(1, length + 1, device=device, dtype=torch.float32)[:, None] * freq
    emb = torch.cat([arg.sin(), arg.cos()], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb.to(dtype)


def attention_mask(key_mask: torch.Tensor, n_queries: int, causal: bool) -> torch.Tensor:
    """Allowed (query, key) pairs, (B, 1, Lq, Lk) bool: real keys, and with ``causal`` keys at
    positions <= the query's (MulT's ``buffered_future_mask`` for Lq == Lk). A query row
    with no allowed key (a sequence without real positions) gets every key, its output
    being discarded."""
    allowed = key_mask[:, None, None, :].expand(-1, 1, n_queries, -1)
    if causal:
        Lk = key_mask.shape[1]
        past = torch.ones(n_queries, Lk, dtype=torch.bool, device=key_mask.device).tril(
            abs(Lk - n_queries))
        allowed = allowed & past
    return allowed | ~allowed.any(-1, keepdim=True)


class MultiheadAttention(nn.Module):
    """Joint q/k/v input projection, scaled dot-product attention, output projection (MulT's
    ``MultiheadAttention``, xavier-initialised, zero biases)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads, self.dropout = heads, dropout
        self.in_proj = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj.weight)
        nn.init.zeros_(self.in_proj.bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, q: torch.Tensor, kv: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """q (B, Lq, D), kv (B, Lk, D), allowed (B, 1, Lq, Lk) -> (B, Lq, D)."""
        B, Lq, D = q.shape
        H = self.heads
        w_q, w_kv = self.in_proj.weight.split([D, 2 * D])
        b_q, b_kv = self.in_proj.bias.split([D, 2 * D])
        k, v = F.linear(kv, w_kv, b_kv).chunk(2, dim=-1)
        split = lambda t: t.view(B, -1, H, D // H).transpose(1, 2)  # noqa: E731  (B, H, L, d_h)
        out = F.scaled_dot_product_attention(
            split(F.linear(q, w_q, b_q)), split(k), split(v),
            attn_mask=additive_mask(allowed, q.dtype),
            dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(B, Lq, D))


class TransformerLayer(nn.Module):
    """Pre-LN layer: ``x + Drop(Attn(LN0 x, LN0 kv))``, then ``x + Drop(MLP(LN1 x))``."""

    def __init__(self, dim: int, heads: int, attn_dropout: float, relu_dropout: float,
                 res_dropout: float):
        super().__init__()
        self.attn = MultiheadAttention(dim, heads, attn_dropout)
        self.norm0, self.norm1 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.relu_dropout, self.res_dropout = relu_dropout, res_dropout

    def forward(self, x: torch.Tensor, kv: torch.Tensor | None, allowed: torch.Tensor):
        q = self.norm0(x)
        a = self.attn(q, q if kv is None else self.norm0(kv), allowed)
        x = x + F.dropout(a, self.res_dropout, self.training)
        h = F.dropout(F.relu(self.fc1(self.norm1(x))), self.relu_dropout, self.training)
        return x + F.dropout(self.fc2(h), self.res_dropout, self.training)


class TransformerEncoder(nn.Module):
    """MulT's ``TransformerEncoder``: self-attention, or cross-attention to ``kv`` when given.

    ``forward(x, kv, mask)``: x (B, L, D), kv (B, L_k, D) or None, mask (B, L_k) real key
    positions -> (B, L, D).
    """

    def __init__(self, dim: int, heads: int, layers: int, attn_dropout: float = 0.0,
                 relu_dropout: float = 0.0, res_dropout: float = 0.0,
                 embed_dropout: float = 0.0, causal: bool = True):
        super().__init__()
        self.scale, self.embed_dropout, self.causal = math.sqrt(dim), embed_dropout, causal
        self.layers = nn.ModuleList(
            TransformerLayer(dim, heads, attn_dropout, relu_dropout, res_dropout)
            for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.scale * x + sinusoidal_positions(x.shape[1], x.shape[2], x.device, x.dtype)
        return F.dropout(x, self.embed_dropout, self.training)

    def forward(self, x: torch.Tensor, kv: torch.Tensor | None, mask: torch.Tensor):
        allowed = attention_mask(mask, x.shape[1], self.causal)
        x = self._embed(x)
        kv = None if kv is None else self._embed(kv)
        for layer in self.layers:
            x = layer(x, kv, allowed)
        return self.norm(x)


class MulTFusion(nn.Module):
    """IMDer's fusion (``imder.py`` l.111-133, 256-293) with an output per utterance.

    For each modality m: one cross-modal transformer from every other modality o (query m,
    keys o; ``nlevels`` layers), their outputs concatenated ((M-1) D), a self-attention
    "memory" over that (``max(nlevels, 3)`` layers); the M memories concatenated
    (M (M-1) D = 6 D for three modalities), ``z + Linear(Drop(ReLU(Linear z)))``, a linear
    head. The reference takes the last time step of each memory; we keep every utterance.

    ``attn_dropout`` maps a key modality to its attention dropout (the reference keys the
    cross-modal transformers' attention dropout by their source: ``attn_dropout_a`` for keys
    from audio, ``attn_dropout_v`` from video, ``attn_dropout`` from text); the memories use
    ``mem_attn_dropout``. Concatenations follow the data set's modality order (the
    reference: l, a, v and its own pair order), a permutation of the same channels.
    """

    def __init__(self, modalities: tuple[str, ...], dim: int, heads: int, nlevels: int,
                 attn_dropout: dict[str, float], mem_attn_dropout: float, relu_dropout: float,
                 res_dropout: float, embed_dropout: float, output_dropout: float,
                 causal: bool, n_outputs: int):
        super().__init__()
        self.modalities = modalities
        M = len(modalities)
        common = dict(relu_dropout=relu_dropout, res_dropout=res_dropout,
                      embed_dropout=embed_dropout, causal=causal)
        self.cross = nn.ModuleDict({
            f"{m}_with_{o}": TransformerEncoder(dim, heads, nlevels, attn_dropout[o], **common)
            for m in modalities for o in modalities if o != m})
        self.memory = nn.ModuleDict({
            m: TransformerEncoder((M - 1) * dim, heads, max(nlevels, 3), mem_attn_dropout,
                                  **common) for m in modalities})
        combined = M * (M - 1) * dim
        self.proj1, self.proj2 = nn.Linear(combined, combined), nn.Linear(combined, combined)
        self.out_layer = nn.Linear(combined, n_outputs)
        self.output_dropout = output_dropout

    def forward(self, p: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """p: modality -> (B, S, D) complete projections (available or recovered); mask (B, S)
        real utterances -> (B, S, n_outputs)."""
        h = []
        for m in self.modalities:
            crossed = [self.cross[f"{m}_with_{o}"](p[m], p[o], mask)
                       for o in self.modalities if o != m]
            h.append(self.memory[m](torch.cat(crossed, -1), None, mask))   # (B, S, (M-1) D)
        z = torch.cat(h, -1)                                               # (B, S, M (M-1) D)
        z = z + self.proj2(F.dropout(F.relu(self.proj1(z)), self.output_dropout, self.training))
        return self.out_layer(z)
