"""Dropout whose mask costs a few nanoseconds per element on CPU (MoMKE's family; #18).

``torch.nn.Dropout`` on CPU draws one Bernoulli number per element through the generator
(~20 ns each on this project's machine): about a fifth of a MoMKE training step at dropout
0.5. Here one 64-bit random word gives the mask of three elements: ``random_()`` on int64
fills ``[0, 2^63)``, so its low 48 bits are uniform, and each 16-bit chunk ``c`` keeps its
element where ``c >= t``. The keep probability is therefore ``q = (32768 - t) / 65536``: ``1 - p``
rounded to a multiple of 1/65536 (exact for MoMKE's 0.5 and any p = j / 65536; otherwise off
by at most 7.7e-6), and kept elements are scaled by ``1 / q`` so the expectation is exact.
The same generator (torch's default, seeded by the trainer) drives it, on CPU and CUDA alike.

``impl="torch"`` is ``nn.Dropout`` itself: the old path (its random stream, so its numbers).
"""
from __future__ import annotations

import math

import torch
from torch import nn

IMPLEMENTATIONS = ("bits", "torch")
_HALF = 1 << 15   # int16 chunks are uniform over [-2^15, 2^15)


def keep_mask(shape: tuple[int, ...], p: float, device: torch.device) -> torch.Tensor:
    """BoolTensor ``shape``: True with probability ``1 - p`` rounded to a multiple of 2^-16."""
    n = math.prod(shape)
    words = torch.empty((n + 2) // 3, dtype=torch.int64, device=device).random_()
    # little-endian int16 view: chunks 0-2 are the low 48 bits (chunk 3 holds the unset sign bit)
    chunks = words.view(torch.int16).view(-1, 4)[:, :3].reshape(-1)[:n]
    return (chunks >= threshold(p)).view(shape)


def threshold(p: float) -> int:
    """The chunk value from which an element is kept: ``2^15 - round((1 - p) * 2^16)``."""
    return _HALF - round((1.0 - p) * 2 * _HALF)


def keep_probability(p: float) -> float:
    """The keep probability :func:`keep_mask` realises for a dropout rate ``p``."""
    return (_HALF - threshold(p)) / (2 * _HALF)


class _MaskedScale(torch.autograd.Function):
    """``x * keep * scale`` saving the boolean mask (1 byte per element) for backward."""

    @staticmethod
    def forward(ctx, x, keep, scale):
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x * keep * scale

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return grad * keep * ctx.scale, None, None


class BitsDropout(nn.Module):
    """Drop-in for ``nn.Dropout(p)`` (training only, identity in eval) with the mask of
    :func:`keep_mask`. Input and output: any shape."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        q = keep_probability(self.p)
        if q == 0.0:
            return x * 0.0
        return _MaskedScale.apply(x, keep_mask(tuple(x.shape), self.p, x.device), 1.0 / q)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def dropout(p: float, impl: str = "bits") -> nn.Module:
    """The dropout module of ``impl``: ``"bits"`` (:class:`BitsDropout`) or ``"torch"``."""
    if impl == "bits":
        return BitsDropout(p)
    if impl == "torch":
        return nn.Dropout(p)
    raise ValueError(f"unknown dropout implementation {impl!r}; expected "
                     f"{' or '.join(map(repr, IMPLEMENTATIONS))}")
