"""Masked multi-head self-attention over the utterances of a sequence (MoMKE's expert layer).

Two interchangeable paths:

* ``"sdpa"`` — ``torch.nn.functional.scaled_dot_product_attention`` with a boolean key mask;
* ``"loop"`` — the reference formula written out, one head at a time:
  ``softmax(q k^T / sqrt(d_h) with masked keys at -inf)``; rows whose keys are all masked
  become NaN in the softmax and are set to zero, as in ``wxxv/MoMKE``.

Both give the same output (tested), so the fast path can be checked against the readable one.
The loop path also serves as the baseline in ``bench/bench_momke.py``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor,
                     dropout_p: float = 0.0, impl: str = "sdpa") -> torch.Tensor:
    """Scaled dot-product attention with a key mask.

    Parameters
    ----------
    q, k, v : Tensor (B, H, S, d_h)
    key_mask : BoolTensor (B, S)
        True where the key may be attended to.
    dropout_p : float
        Dropout on the attention weights (training only; caller passes 0.0 in eval).
    impl : {"sdpa", "loop"}

    Returns
    -------
    Tensor (B, H, S, d_h); rows whose every key is masked are zero.
    """
    any_key = key_mask.any(dim=-1)  # (B,)
    if impl == "sdpa":
        mask = key_mask[:, None, None, :]  # (B, 1, 1, S) broadcast over heads and queries
        # A fully masked row gives NaN in SDPA; give it one dummy key and zero it afterwards.
        safe = mask | ~any_key[:, None, None, None]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe, dropout_p=dropout_p)
        return out * any_key[:, None, None, None].to(out.dtype)
    if impl == "loop":
        return _reference_attention(q, k, v, key_mask, dropout_p)
    raise ValueError(f"unknown attention implementation {impl!r}; expected 'sdpa' or 'loop'")


def _reference_attention(q, k, v, key_mask, dropout_p):
    scale = q.shape[-1] ** -0.5
    heads = []
    for h in range(q.shape[1]):  # per-head loop, as a straightforward reimplementation would
        scores = (q[:, h] * scale) @ k[:, h].transpose(-2, -1)  # (B, S, S)
        scores = scores.masked_fill(~key_mask[:, None, :], float("-inf"))
        attn = scores.softmax(dim=-1)
        attn = torch.where(torch.isnan(attn), torch.zeros_like(attn), attn)
        attn = F.dropout(attn, p=dropout_p, training=dropout_p > 0)
        heads.append(attn @ v[:, h])  # (B, S, d_h)
    return torch.stack(heads, dim=1)  # (B, H, S, d_h)


class MaskedSelfAttention(nn.Module):
    """q, k, v linear maps and multi-head attention; no output projection (as the reference).

    Input and output: (B, S, D). ``key_mask`` (B, S) marks utterances whose keys may be used.
    ``one_key_shortcut`` (on; off is the old path, for benchmarks): with one utterance per
    sequence, skip q and k, whose result cannot matter.
    """

    one_key_shortcut = True

    def __init__(self, dim: int, n_heads: int, attn_dropout: float = 0.0, impl: str = "sdpa"):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"width {dim} is not divisible by {n_heads} heads")
        self.n_heads, self.attn_dropout, self.impl = n_heads, attn_dropout, impl
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        B, S, D = x.shape
        H = self.n_heads
        p = self.attn_dropout if self.training else 0.0
        if self._one_key(S, p):
            return self._values_only(x) * key_mask[..., None].to(x.dtype)
        split = lambda t: t.view(B, S, H, D // H).transpose(1, 2)  # noqa: E731  (B, H, S, d_h)
        out = masked_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)), key_mask,
                               p, self.impl)
        return out.transpose(1, 2).reshape(B, S, D)

    def _one_key(self, S: int, dropout_p: float) -> bool:
        return S == 1 and dropout_p == 0.0 and self.impl == "sdpa" and self.one_key_shortcut

    def _values_only(self, x: torch.Tensor) -> torch.Tensor:
        """Attention over a single key: its softmax weight is exactly 1, so the output is v and
        q, k get exactly zero gradient — kept as zeros (not None), so Adam's weight decay and
        moments move as on the full path. Utterance-level data is all S == 1."""
        zero = sum(t.sum() for t in (self.q.weight, self.q.bias, self.k.weight, self.k.bias))
        return self.v(x) + 0.0 * zero

    def packed(self, h: torch.Tensor, rows: torch.Tensor, key_mask: torch.Tensor
               ) -> torch.Tensor:
        """The same attention computed for the available positions only.

        ``h`` (N, D) are the rows ``rows`` (N,) of the flattened (B*S) grid where ``key_mask``
        (B, S) is True. The q, k, v maps run on the N rows; only the attention itself sees
        the padded grid. Returns (N, D): what :meth:`forward` gives at those positions.
        """
        B, S = key_mask.shape
        D, H = h.shape[1], self.n_heads
        p = self.attn_dropout if self.training else 0.0
        if self._one_key(S, p):
            return self._values_only(h)      # every packed row is its own available key

        def grid(t):  # (N, D) -> (B, H, S, d_h), zero at the positions not computed
            full = t.new_zeros(B * S, D).index_copy(0, rows, t)
            return full.view(B, S, H, D // H).transpose(1, 2)
        out = masked_attention(grid(self.q(h)), grid(self.k(h)), grid(self.v(h)), key_mask,
                               p, self.impl)
        return out.transpose(1, 2).reshape(B * S, D).index_select(0, rows)


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

