"""``zero-fill`` — the floor: fill missing modalities with zeros, concatenate, classify.

No sequence context, no reconstruction, no experts: an MLP on ``[x_a; x_t; x_v]`` where each
unavailable block is set to zero (explicitly, from ``batch.available``). Any method that handles
missing modalities should do at least this well.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..data.dataset import Batch
from ..training.method import Method
from .registry import register_method


@dataclass
class ZeroFillConfig:
    hidden: int = 256
    dropout: float = 0.5


@register_method("zero-fill")
class ZeroFill(Method):
    """Zero-filled concatenation -> Linear -> ReLU -> Dropout -> Linear. (B, S, ·) -> (B, S, C)."""

    Config = ZeroFillConfig

    def __init__(self, config: ZeroFillConfig, dims, n_outputs, task):
        super().__init__(config, dims, n_outputs, task)
        self.net = nn.Sequential(nn.Linear(sum(dims.values()), config.hidden), nn.ReLU(),
                                 nn.Dropout(config.dropout), nn.Linear(config.hidden, n_outputs))

    def forward(self, batch: Batch) -> torch.Tensor:
        blocks = [batch.x[m] * batch.available[..., i, None].to(batch.x[m].dtype)
                  for i, m in enumerate(self.modalities)]
        return self.net(torch.cat(blocks, dim=-1))
