"""IF-MMIN — MMIN guided by modality-invariant features (Zuo, Liu, Lian et al., ICASSP 2023;
code ``ZhuoYulang/IF-MMIN``).

Stage 1 (``pretrain``, once per fold): encoders and one *shared* encoder (the same network for
every modality) on top of them; the classifier reads ``[h_a; h_t; h_v; s_a; s_t; s_v]``; loss =
CE + CMD, the central moment discrepancy (5 moments) between the shared features of each pair
of modalities, averaged over the three pairs — it pulls them into a modality-invariant space.
Stage 2 (``imagine``): encoders and shared encoder start from stage 1; the invariant vector of
the available input ``c = [S(h_a); S(h_t); S(h_v)]`` is added to every autoencoder block's input
(no cycle autoencoder); the classifier reads the blocks' latents. Loss = CE + 1 * MSE(imagined,
frozen stage-1 embedding of the hidden modalities) + 1 * MSE(c, frozen stage-1 invariant vector of
the full input).

The released IEMOCAP script passes ``--consistent_weight=100``, a flag this model does not
define, so its invariant weight stays at the code's default 1.0 — ours too. Other deviations
(MLP encoders on utterance-level vectors, schedule, clipping) are in
:mod:`hardymer.models.imagination`.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import torch
from torch import nn

from ..data.dataset import Batch
from ..training.method import task_loss
from .imagination import (FcClassifier, ImaginationConfig, ImaginationMethod, ResidualAE,
                          SharedEncoder, flat, masked_mse, scatter)
from .registry import register_method


@dataclass
class IFMMINConfig(ImaginationConfig):
    """Defaults: ``CAP_utt_shared.sh`` (stage 1) and ``CAP_IFMMIN.sh`` (stage 2)."""

    cmd_moments: int = 5
    cmd_weight: float = 1.0
    invariant_weight: float = 1.0


def cmd(x1: torch.Tensor, x2: torch.Tensor, moments: int = 5) -> torch.Tensor:
    """Central moment discrepancy (Zellinger et al. 2017) of two samples (N, D):
    ``||E x1 - E x2|| + sum_{k=2..K} ||c_k(x1) - c_k(x2)||``, c_k the k-th central moment."""
    m1, m2 = x1.mean(0), x2.mean(0)
    c1, c2 = x1 - m1, x2 - m2
    out = torch.linalg.vector_norm(m1 - m2)
    for k in range(2, moments + 1):
        out = out + torch.linalg.vector_norm(c1.pow(k).mean(0) - c2.pow(k).mean(0))
    return out


@register_method("if-mmin")
class IFMMIN(ImaginationMethod):
    """MMIN with CMD-aligned invariant features conditioning the imagination."""

    Config = IFMMINConfig

    def __init__(self, config: IFMMINConfig, dims, n_outputs, task):
        super().__init__(config, dims, n_outputs, task)
        c, D = config, config.embd_size * len(dims)
        self.pre_shared = SharedEncoder(c.embd_size)
        self.shared = SharedEncoder(c.embd_size)
        self.pre_cls = FcClassifier(2 * D, c.cls_layers, n_outputs, c.pretrain_dropout)
        self.ae = ResidualAE(D, c.ae_layers, c.n_blocks)
        self.cls = FcClassifier(c.ae_layers[-1] * c.n_blocks, c.cls_layers, n_outputs, c.dropout)

    def stage2_pairs(self):
        return [(self.pre_enc, self.enc), (self.pre_shared, self.shared)]

    def invariant(self, encoders: nn.ModuleDict, shared: nn.Module, x: dict) -> torch.Tensor:
        """(N, M*embd): the shared encoder applied to each modality's embedding."""
        return torch.cat([shared(encoders[m](x[m])) for m in self.modalities], dim=-1)

    def pretrain_loss(self, batch: Batch):
        x, _, present = flat(batch)
        x = self.zeroed(x, present, self.modalities)
        h = {m: self.pre_enc[m](x[m]) for m in self.modalities}
        s = {m: self.pre_shared(h[m]) for m in self.modalities}
        feats = [h[m] for m in self.modalities] + [s[m] for m in self.modalities]
        logits = self.pre_cls(torch.cat(feats, dim=-1))
        ce = task_loss(scatter(logits, batch), batch, self.task)
        pairs = list(combinations(self.modalities, 2))
        align = sum(cmd(s[p], s[q], self.config.cmd_moments) for p, q in pairs) / len(pairs)
        loss = ce + self.config.cmd_weight * align
        return loss, {"task": float(ce.detach()), "cmd": float(align.detach())}

    def imagine(self, x, available) -> dict:
        xz = self.zeroed(x, available, self.modalities)
        feat = self.encode(self.enc, xz)
        inv = self.invariant(self.enc, self.shared, xz)
        recon, latent = self.ae(feat, inv)
        return {"logits": self.cls(latent), "recon": recon, "feat": feat, "invariant": inv}

    def extra_losses(self, x, available, present, out) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            self.pre_enc.eval(), self.pre_shared.eval()
            full = self.invariant(self.pre_enc, self.pre_shared,
                                  self.zeroed(x, present, self.modalities))
        return {"invariant": masked_mse(out["invariant"], full, torch.ones_like(full))}

    def weight(self, name: str) -> float:
        return self.config.invariant_weight if name == "invariant" else super().weight(name)
