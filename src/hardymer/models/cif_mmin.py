"""CIF-MMIN — MMIN with contrastively learned invariant ("consistent") features (Liu, Zuo et
al., 2024; code ``ZhuoYulang/CIF-MMIN``).

Stage 1 (``pretrain``, once per fold): the task encoders feed a classifier on their
concatenation (CE); separate *consistent* encoders, one per modality, each followed by its own
projection head, are aligned by CLIP-style contrastive losses between every pair of modalities
(weights t–v 0.25, t–a 0.25, v–a 0.5; cosine similarities scaled by ``exp(τ)``, τ learnable).
As in the reference, the positive pair is left out of each row's denominator:
``-log(exp s_ii / (Σ_{j≠i} exp s_ij + 1e-10))``, averaged over both directions.
Stage 2 (``imagine``): task and consistent encoders start from stage 1; the consistent vector of
the available input ``c = [C_a(x_a); C_t(x_t); C_v(x_v)]`` is added to every autoencoder block's
input; the classifier reads ``h + h'`` (input embedding plus imagined one). Loss = CE + 8 * MSE(h',
frozen stage-1 embedding of the hidden modalities) + 100 * MSE(c, frozen stage-1 consistent
vector of the full input).

Deviations shared with the family are in :mod:`hardymer.models.imagination`; the reference's
text consistent encoder is an LSTM over word vectors, ours an MLP like the others.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.dataset import Batch
from ..training.method import task_loss
from .imagination import (FcClassifier, ImaginationConfig, ImaginationMethod, ResidualAE,
                          SharedEncoder, flat, masked_mse, scatter)
from .registry import register_method


@dataclass
class CIFMMINConfig(ImaginationConfig):
    """Defaults: ``CAP_utt_self_supervise.sh`` (stage 1) and ``CAP_CIF_MMIN.sh`` (stage 2)."""

    pair_weights: dict[str, float] = field(
        default_factory=lambda: {"t-v": 0.25, "a-t": 0.25, "a-v": 0.5})  # other pairs: 1/n
    mse_weight: float = 8.0
    consistent_weight: float = 100.0


def contrastive(p: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The reference's symmetric pairwise loss for (N, D) views p, q of the same N samples
    (positive excluded from the denominator). Needs N >= 2."""
    s = F.normalize(p, dim=-1) @ F.normalize(q, dim=-1).T * scale          # (N, N)
    e = s.exp()
    pos = e.diagonal()
    off = e.masked_fill(torch.eye(len(s), dtype=torch.bool, device=s.device), 0.0)
    forward = -torch.log(pos / (off.sum(1) + 1e-10) + 1e-20).mean()
    backward = -torch.log(pos / (off.sum(0) + 1e-10) + 1e-20).mean()
    return (forward + backward) / 2


@register_method("cif-mmin")
class CIFMMIN(ImaginationMethod):
    """MMIN with contrastive consistent features conditioning the imagination."""

    Config = CIFMMINConfig

    def __init__(self, config: CIFMMINConfig, dims, n_outputs, task):
        super().__init__(config, dims, n_outputs, task)
        c, D = config, config.embd_size * len(dims)
        # The consistent encoders read the raw features, like the task encoders.
        self.pre_con, self.con = self.new_encoders(), self.new_encoders()
        self.heads = nn.ModuleDict({m: SharedEncoder(c.embd_size) for m in dims})
        self.log_scale = nn.Parameter(torch.tensor(1.0))  # τ; similarities scaled by exp(τ)
        self.pre_cls = FcClassifier(D, c.cls_layers, n_outputs, c.pretrain_dropout)
        self.ae = ResidualAE(D, c.ae_layers, c.n_blocks)
        self.cls = FcClassifier(D, c.cls_layers, n_outputs, c.dropout)

    def stage2_pairs(self):
        return [(self.pre_enc, self.enc), (self.pre_con, self.con)]

    def pretrain_loss(self, batch: Batch):
        x, _, present = flat(batch)
        x = self.zeroed(x, present, self.modalities)
        logits = self.pre_cls(self.encode(self.pre_enc, x))
        ce = task_loss(scatter(logits, batch), batch, self.task)
        z = {m: self.heads[m](self.pre_con[m](x[m])) for m in self.modalities}
        parts = {"task": ce}
        if len(x[self.modalities[0]]) >= 2:
            scale = self.log_scale.exp()
            pairs = list(combinations(self.modalities, 2))
            for p, q in pairs:
                weights = self.config.pair_weights
                w = weights.get(f"{p}-{q}", weights.get(f"{q}-{p}", 1.0 / len(pairs)))
                if w:
                    parts[f"cl_{p}{q}"] = w * contrastive(z[p], z[q], scale)
        loss = sum(parts.values())
        return loss, {k: float(v.detach()) for k, v in parts.items()}

    def imagine(self, x, available) -> dict:
        xz = self.zeroed(x, available, self.modalities)
        feat = self.encode(self.enc, xz)
        consistent = self.encode(self.con, xz)
        recon, _ = self.ae(feat, consistent)
        return {"logits": self.cls(feat + recon), "recon": recon, "feat": feat,
                "consistent": consistent}

    def extra_losses(self, x, available, present, out) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            self.pre_con.eval()
            full = self.encode(self.pre_con, self.zeroed(x, present, self.modalities))
        return {"consistent": masked_mse(out["consistent"], full, torch.ones_like(full))}

    def weight(self, name: str) -> float:
        return self.config.consistent_weight if name == "consistent" else super().weight(name)
