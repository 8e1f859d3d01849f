"""IMDer's refinement network ``rec_m`` (``imder.py`` l.92-108, ``rcan.py``): RCAN blocks.

``Conv1d(D -> 2D, 1)`` -> ``Group`` -> ``Conv1d(2D -> D, 1)``; ``Group`` = ``blocks`` residual
channel-attention blocks (RCAB: conv -> ReLU -> conv -> channel attention, plus the input;
``res_scale`` 1) then a conv, plus the group's input; channel attention = average over the
sequence -> ``1x1 conv (C -> C / reduction)`` -> ReLU -> ``1x1 conv`` -> sigmoid, times the
input. Channel-first ``(B, C, L)``; L = the utterances of a dialogue.

Ours: the convs of kernel ``kernel`` (the reference's 3) see zeros at padding, and the channel
attention averages over real positions only, so padding never reaches a real position;
``C / reduction`` is at least 1 (small test widths).
"""
from __future__ import annotations

import torch
from torch import nn

from .score import zero_pad


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, C, L) averaged over the real positions of ``mask`` (B, L) -> (B, C, 1)."""
    m = mask[:, None, :].to(x.dtype)
    return (x * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1)


class ChannelAttention(nn.Module):
    def __init__(self, channels: int, reduction: int):
        super().__init__()
        mid = max(channels // reduction, 1)
        self.body = nn.Sequential(nn.Conv1d(channels, mid, 1), nn.ReLU(),
                                  nn.Conv1d(mid, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x * self.body(masked_mean(x, mask))


class RCAB(nn.Module):
    def __init__(self, channels: int, reduction: int, kernel: int, res_scale: float = 1.0):
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.ca = ChannelAttention(channels, reduction)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = zero_pad(torch.relu(self.conv1(x)), mask)
        h = zero_pad(self.conv2(h), mask)
        return self.ca(h, mask) * self.res_scale + x


class Refiner(nn.Module):
    """``rec_m``: (B, D, L) sample, mask (B, L) -> refined (B, D, L), zero at padding."""

    def __init__(self, dim: int, blocks: int, reduction: int, kernel: int):
        super().__init__()
        width = 2 * dim
        self.inp = nn.Conv1d(dim, width, 1)
        self.blocks = nn.ModuleList(RCAB(width, reduction, kernel) for _ in range(blocks))
        self.tail = nn.Conv1d(width, width, kernel, padding=kernel // 2)
        self.out = nn.Conv1d(width, dim, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        g = zero_pad(self.inp(x), mask)
        h = g
        for block in self.blocks:
            h = block(h, mask)
        h = zero_pad(self.tail(h), mask) + g
        return zero_pad(self.out(h), mask)
