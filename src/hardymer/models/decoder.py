"""Per-modality decoders: reconstruct every modality's input feature from a fused representation.

Used by HARDY-MER's final model (``L_rec``) and by its teacher (direct hardness ``h_dir``).
"""
from __future__ import annotations

import torch
from torch import nn


class ModalityDecoders(nn.Module):
    """(B, S, F) fused -> {m: (B, S, d_m)} reconstructions; ``Linear -> GELU -> Linear``."""

    def __init__(self, fused_dim: int, hidden: int, dims: dict[str, int]):
        super().__init__()
        self.decoders = nn.ModuleDict({m: nn.Sequential(nn.Linear(fused_dim, hidden), nn.GELU(),
                                                        nn.Linear(hidden, d))
                                       for m, d in dims.items()})

    def forward(self, fused: torch.Tensor) -> dict[str, torch.Tensor]:
        return {m: dec(fused) for m, dec in self.decoders.items()}


def reconstruction_error(recon: dict[str, torch.Tensor], x: dict[str, torch.Tensor],
                         weight: torch.Tensor, norm: str = "mse") -> torch.Tensor:
    """Per-utterance ``sum_m weight[..., m] * err_m`` (B, S).

    ``norm="mse"``: ``err_m = ||x_m - x̂_m||² / d_m`` (mean squared error per dimension, the
    reference code's reading); ``norm="l2"``: ``err_m = ||x_m - x̂_m||_2`` (the paper's formula
    read literally). ``weight`` is (B, S, M) float, e.g. 1 where m is missing.
    """
    errs = []
    for m, r in recon.items():
        diff = r - x[m]
        errs.append(diff.pow(2).mean(-1) if norm == "mse" else diff.norm(dim=-1))
    return (torch.stack(errs, -1) * weight).sum(-1)
