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

from dataclasses import dataclass

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
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=additive_mask(safe, q.dtype),
                                             dropout_p=dropout_p)
        return out * any_key[:, None, None, None].to(out.dtype)
    if impl == "loop":
        return _reference_attention(q, k, v, key_mask, dropout_p)
    raise ValueError(f"unknown attention implementation {impl!r}; expected 'sdpa' or 'loop'")


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean mask -> 0 / -inf bias of the same shape. SDPA's CPU kernel takes a float bias
    ~20 % faster (forward + backward) than the boolean mask it would convert itself."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(
        ~allowed, float("-inf"))


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

    def packed(self, h: torch.Tensor, packing: Packing) -> torch.Tensor:
        """The same attention computed for the available positions only.

        ``h`` (N, D) are the available rows in ``packing``'s order. The q, k, v maps run on
        the N rows; only the attention itself sees a grid, one per length group. Returns
        (N, D): what :meth:`forward` gives at those positions, in the same order.
        """
        D, H = h.shape[1], self.n_heads
        p = self.attn_dropout if self.training else 0.0
        if all(self._one_key(g.width, p) for g in packing.groups):
            return self._values_only(h)      # every packed row is its own available key
        q, k, v = self.q(h), self.k(h), self.v(h)
        outs = []
        for g in packing.groups:
            if self._one_key(g.width, p):
                outs.append(v[g.start:g.stop])
                continue

            def grid(t, g=g):  # (N_g, D) -> (n, H, width, d_h), zero at the padding slots
                t = t[g.start:g.stop]
                if g.slots is not None:
                    t = t.new_zeros(g.n * g.width, D).index_copy(0, g.slots, t)
                return t.view(g.n, g.width, H, D // H).transpose(1, 2)
            out = masked_attention(grid(q), grid(k), grid(v), g.key_mask, p, self.impl)
            out = out.transpose(1, 2).reshape(g.n * g.width, D)
            outs.append(out if g.slots is None else out.index_select(0, g.slots))
        return outs[0] if len(outs) == 1 else torch.cat(outs)


@dataclass(frozen=True)
class Group:
    """Sequences of similar length attended together: packed rows ``start:stop`` form an
    (n, width) grid; ``slots`` (stop - start,) are their places in it (None: the grid is full,
    rows in order); ``key_mask`` (n, width) marks the real ones."""

    start: int
    stop: int
    n: int
    width: int
    slots: torch.Tensor | None
    key_mask: torch.Tensor


@dataclass(frozen=True)
class Packing:
    """Where the N available positions of a (B, S) key mask go in the packed computation.

    Attention here has no notion of position (no positional encoding, no causal mask): what a
    query sees is the *set* of its sequence's available keys. So each sequence's available
    utterances can sit side by side, and sequences of similar counts share a grid (a
    :class:`Group`) as wide as their longest: the attention skips the padding of a (B, S) grid
    (IEMOCAP batches: about half) at the cost of one call per group. The rows are kept group by
    group: ``order`` (N,) maps them from the natural order (``key_mask.reshape(-1).nonzero()``),
    ``rows`` (N,) gives each one's flat B*S position. Every other layer is per row, so the
    whole expert stack runs in this order and is scattered back once.

    ``grouped=False`` is the old path: one group, the (B, S) grid itself.
    """

    order: torch.Tensor
    rows: torch.Tensor
    groups: tuple[Group, ...]

    # Group cost model for the cut points, in units of one query-key pair of one sequence:
    # a sequence of width w costs w^2 + SLOT * w (scatter and gather of its slots), a group
    # a further CALL (kernel launch and index work). Fitted roughly to SDPA on 2 CPU threads at
    # d_h = 128; it moves only the speed, never the result.
    SLOT = 8
    CALL = 16384

    @classmethod
    def of(cls, key_mask: torch.Tensor, grouped: bool = True) -> Packing:
        B, S = key_mask.shape
        flat = key_mask.reshape(-1)
        natural = flat.nonzero().squeeze(1)                               # (N,)
        if not grouped:
            n = natural.numel()
            slots = None if n == B * S else natural
            return cls(torch.arange(n, device=flat.device), natural,
                       (Group(0, n, B, S, slots, key_mask),))
        counts = key_mask.sum(1)                                          # (B,)
        seq_order = torch.argsort(counts, descending=True, stable=True)
        sorted_counts = counts[seq_order].tolist()
        n_seq = sum(1 for c in sorted_counts if c > 0)
        position = torch.empty_like(seq_order)
        position[seq_order] = torch.arange(B, device=seq_order.device)   # sequence -> rank
        seq_rank = position[natural // S]                                 # its sequence's rank
        rank = key_mask.long().cumsum(1).view(-1)[natural] - 1            # k-th of its row
        order = torch.argsort(seq_rank * S + rank)
        rows = natural[order]
        seq_rank, rank = seq_rank[order], rank[order]
        groups, start = [], 0
        for i, j in cls._cuts(sorted_counts[:n_seq]):
            width = sorted_counts[i]
            stop = start + sum(sorted_counts[i:j])
            n = j - i
            full = stop - start == n * width
            slots = None if full else (seq_rank[start:stop] - i) * width + rank[start:stop]
            mask = (torch.arange(width, device=flat.device)[None, :]
                    < counts[seq_order[i:j]][:, None])
            groups.append(Group(start, stop, n, width, slots, mask))
            start = stop
        return cls(order, rows, tuple(groups))

    def scatter(self, r: torch.Tensor, size: int) -> torch.Tensor:
        """Packed rows ``r`` (N, D) back to their flat grid positions: (size, D), zero at
        the positions not computed."""
        return r.new_zeros(size, r.shape[-1]).index_copy(0, self.rows, r)

    @classmethod
    def _cuts(cls, lengths: list[int]) -> list[tuple[int, int]]:
        """Cut the descending ``lengths`` into groups [i, j) of least total cost (dynamic
        programming over the runs of equal lengths; a group's width is its first length)."""
        runs = []                                        # (first index, length) of each run
        for idx, n in enumerate(lengths):
            if not runs or lengths[runs[-1][0]] != n:
                runs.append((idx, n))
        ends = [r[0] for r in runs[1:]] + [len(lengths)]
        best = [0.0] + [float("inf")] * len(runs)         # best[r]: cost of runs[:r]
        cut = [0] * (len(runs) + 1)
        for r_end in range(1, len(runs) + 1):
            j = ends[r_end - 1]
            for r in range(r_end):
                i, w = runs[r]
                c = best[r] + (j - i) * (w * w + cls.SLOT * w) + cls.CALL
                if c < best[r_end]:
                    best[r_end], cut[r_end] = c, r
        out, r_end = [], len(runs)
        while r_end:
            r = cut[r_end]
            out.append((runs[r][0], ends[r_end - 1]))
            r_end = r
        return out[::-1]


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

