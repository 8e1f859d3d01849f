"""MMIN — Missing Modality Imagination Network (Zhao, Li, Jin, ACL 2021; code ``AIM3-RUC/MMIN``).

Stage 1 (``pretrain``, once per fold): a full-modality fusion model — one encoder per modality,
concatenation, an MLP classifier — trained with CE on every modality the data holds.
Stage 2 (``imagine``, under the condition): encoders initialised from stage 1 embed the
available modalities (hidden ones enter as zeros); a cascade residual autoencoder (5 blocks,
384 -> 256 -> 128 -> 64) maps the concatenation ``h`` to an imagined full embedding ``h'``;
a backward autoencoder maps ``h'`` back; the classifier reads the blocks' concatenated latents
(5 x 64). Loss = 1 * CE + 4 * MSE(h', frozen stage-1 embedding of the hidden modalities) +
2 * MSE(backward(h'), h.detach()).

Shapes: utterance rows (N, ·) inside, (B, S, C) to the trainer; embeddings 128 per modality.
Shared parts and every deviation from the reference (MLP encoders on utterance-level vectors,
no learning-rate decay, global gradient clipping, selection metric) are in
:mod:`hardymer.models.imagination`. ``pattern_training`` reproduces MMIN's own training (each
training utterance draws one of the six incomplete patterns anew) and is off by default, so
every method trains under the same condition.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.dataset import Batch
from ..training.method import task_loss
from .imagination import (FcClassifier, ImaginationConfig, ImaginationMethod, ResidualAE, flat,
                          masked_mse, scatter)
from .registry import register_method


@dataclass
class MMINConfig(ImaginationConfig):
    """Defaults: the reference's IEMOCAP scripts (``CAP_utt_fusion.sh``, ``CAP_mmin.sh``)."""

    mse_weight: float = 4.0
    cycle_weight: float = 2.0


@register_method("mmin")
class MMIN(ImaginationMethod):
    """Missing Modality Imagination Network.

    Examples
    --------
    >>> from hardymer.models import create_method
    >>> m = create_method("mmin", {"a": 8, "t": 8, "v": 8}, 4, "classification")
    >>> [s.name for s in m.stages([20, 60])]
    ['pretrain', 'imagine']
    """

    Config = MMINConfig

    def __init__(self, config: MMINConfig, dims, n_outputs, task):
        super().__init__(config, dims, n_outputs, task)
        c, D = config, config.embd_size * len(dims)
        self.pre_cls = FcClassifier(D, c.cls_layers, n_outputs, c.pretrain_dropout)
        self.ae = ResidualAE(D, c.ae_layers, c.n_blocks)
        self.ae_cycle = ResidualAE(D, c.ae_layers, c.n_blocks)
        self.cls = FcClassifier(c.ae_layers[-1] * c.n_blocks, c.cls_layers, n_outputs, c.dropout)

    def pretrain_loss(self, batch: Batch):
        x, _, present = flat(batch)
        logits = self.pre_cls(self.encode(self.pre_enc, self.zeroed(x, present, self.modalities)))
        loss = task_loss(scatter(logits, batch), batch, self.task)
        return loss, {"task": float(loss.detach())}

    def imagine(self, x, available) -> dict:
        feat = self.encode(self.enc, self.zeroed(x, available, self.modalities))  # h
        recon, latent = self.ae(feat)                                             # h'
        return {"logits": self.cls(latent), "recon": recon, "feat": feat}

    def extra_losses(self, x, available, present, out) -> dict[str, torch.Tensor]:
        back, _ = self.ae_cycle(out["recon"])
        return {"cycle": masked_mse(back, out["feat"].detach(), torch.ones_like(back))}

    def weight(self, name: str) -> float:
        return self.config.cycle_weight if name == "cycle" else super().weight(name)
