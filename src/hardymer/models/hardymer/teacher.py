"""HARDY-MER's teacher (spec §1.2): MoMKE + decoders + a cross-modal InfoNCE critic.

The teacher learns, on the fold's complete training samples, to (i) classify under simulated
missingness, (ii) reconstruct the missing modalities from the present ones (its decoders give
the direct hardness ``h_dir``) and (iii) tell matching modality pairs of an utterance from
mismatched ones (its critic gives the indirect hardness ``h_ind``). It is trained by the same
:class:`~hardymer.training.trainer.Trainer` as every method, then frozen.

Masks: by default (``mask_mode="random"``) every training utterance gets a fresh random
non-empty subset of its modalities at every step (uniform over the 2^M - 1 patterns), so one
teacher per fold serves every condition (the reference trains one per condition, about 73 % of
its total time). ``mask_mode="condition"`` trains it under the cell's condition instead.

Critic: ``z_m = normalize(g_m(x_m))`` with a small MLP ``g_m`` per modality on the input
features; for each modality pair (m, n) the symmetric InfoNCE loss over the utterances of the
batch, with score ``z_m · z_n / tau``. Its pointwise form estimates the pointwise mutual
information of a pair (see :mod:`hardymer.models.hardymer.estimate`).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import torch
import torch.nn.functional as F
from torch import nn

from ...data.dataset import Batch
from ...training.method import Stage, task_loss
from ..decoder import ModalityDecoders, reconstruction_error
from ..dropout import dropout as make_dropout
from ..momke import MoMKE, MoMKEConfig


@dataclass
class TeacherConfig(MoMKEConfig):
    lambda_rec: float = 1.0      # weight of the reconstruction loss of missing modalities
    lambda_nce: float = 1.0      # weight of the critic's InfoNCE loss
    critic_dim: int = 128
    temperature: float = 0.1     # tau of the critic's score
    ind_estimator: str = "label-pmi"  # or "infonce"
    n_bins: int = 7              # regression: label bins of the label-pmi critic
    mask_mode: str = "random"    # "random" (one teacher per fold) or "condition"


class LabelCritic(nn.Module):
    """Per-modality posteriors ``p(y | x_m)`` (…, C): the label-pmi agreement estimator.

    Under conditional independence of the modalities given the emotion,
    ``pmi(x_m; x_n) = log sum_y p(y|x_m) p(y|x_n) / p(y)``; each posterior is a small MLP
    trained with cross-entropy on the training labels (regression targets binned).
    """

    def __init__(self, dims: dict[str, int], width: int, n_classes: int, dropout: float,
                 dropout_impl: str = "bits"):
        super().__init__()
        self.enc = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, width), nn.GELU(),
                                                   make_dropout(dropout, dropout_impl),
                                                   nn.Linear(width, n_classes))
                                  for m, d in dims.items()})

    def forward(self, m: str, x: torch.Tensor) -> torch.Tensor:
        """Log-posteriors (…, C)."""
        return self.enc[m](x).log_softmax(-1)


def label_bins(labels: torch.Tensor, task: str, n_bins: int) -> torch.Tensor:
    """Class ids, or regression targets in [-3, 3] rounded into ``n_bins`` bins."""
    if task == "classification":
        return labels.long()
    return ((labels.float().clamp(-3, 3) + 3) / 6 * (n_bins - 1)).round().long()


class Critic(nn.Module):
    """Per-modality embeddings ``z_m`` (…, critic_dim), unit norm."""

    def __init__(self, dims: dict[str, int], width: int, out_dim: int):
        super().__init__()
        self.enc = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, width), nn.GELU(),
                                                   nn.Linear(width, out_dim))
                                  for m, d in dims.items()})

    def forward(self, m: str, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.enc[m](x), dim=-1)


def info_nce(za: torch.Tensor, zb: torch.Tensor, tau: float) -> torch.Tensor:
    """Symmetric InfoNCE of U paired embeddings (U, K): positives on the diagonal."""
    logits = za @ zb.T / tau
    target = torch.arange(za.shape[0], device=za.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def random_patterns(present: torch.Tensor, generator: torch.Generator | None = None
                    ) -> torch.Tensor:
    """A random non-empty subset of each utterance's present modalities.

    present : BoolTensor (B, S, M). Patterns are uniform over the 2^M - 1 non-empty subsets;
    where the drawn subset misses every present modality, the present set is kept whole.
    """
    B, S, M = present.shape
    code = torch.randint(1, 2 ** M, (B, S), generator=generator)
    bits = (code[..., None] >> torch.arange(M)) & 1
    mask = bits.bool().to(present.device) & present
    empty = ~mask.any(-1, keepdim=True)
    return torch.where(empty, present, mask)


class Teacher(MoMKE):
    """HARDY-MER's teacher: a helper trained inside a HARDY-MER run by the same Trainer, not
    a registered method."""

    Config = TeacherConfig
    stage_names = ("unimodal", "teacher")
    method_name = "hardymer-teacher"    # the trainer's progress label

    def __init__(self, config: TeacherConfig, dims, n_outputs, task):
        super().__init__(config, dims, n_outputs, task)
        M, D = len(self.modalities), config.hidden
        self.decoders = ModalityDecoders(M * D, D, dims)
        if config.ind_estimator == "infonce":
            self.critic = Critic(dims, 2 * config.critic_dim, config.critic_dim)
        elif config.ind_estimator == "label-pmi":
            n_lab = n_outputs if task == "classification" else config.n_bins
            self.critic = LabelCritic(dims, 2 * config.critic_dim, n_lab, config.dropout,
                                      config.dropout_impl)
        else:
            raise ValueError(f"unknown ind_estimator {config.ind_estimator!r}; expected "
                             "'label-pmi' or 'infonce'")
        # Label prior p(y) of the label-pmi estimator, set from the training labels.
        self.register_buffer("log_prior", torch.zeros(n_outputs if task == "classification"
                                                      else config.n_bins))

    def stages(self, epochs: list[int]) -> list[Stage]:
        e1, e2 = epochs
        return [Stage("unimodal", e1 if self.config.unimodal_stage else 0,
                      apply_condition=False, select=False),
                Stage("teacher", e2, apply_condition=self.config.mask_mode == "condition",
                      select=False)]

    def reconstruct(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits (B, S, C) and reconstructions {m: (B, S, d_m)} from what is available."""
        fused = self.fused(self.mixed_representations(batch))
        return self.head(fused), self.decoders(fused)

    def critic_loss(self, batch: Batch) -> torch.Tensor:
        """InfoNCE over modality pairs, or the posteriors' cross-entropy (label-pmi)."""
        if self.config.ind_estimator == "label-pmi":
            y = label_bins(batch.labels, self.task, self.config.n_bins)
            losses = [F.nll_loss(self.critic(m, batch.x[m][batch.present[..., i]]),
                                 y[batch.present[..., i]])
                      for i, m in enumerate(self.modalities) if batch.present[..., i].any()]
            return torch.stack(losses).mean()
        losses = []
        for (i, m), (j, n) in combinations(enumerate(self.modalities), 2):
            both = batch.present[..., i] & batch.present[..., j]
            if both.sum() < 2:
                continue
            losses.append(info_nce(self.critic(m, batch.x[m][both]),
                                   self.critic(n, batch.x[n][both]), self.config.temperature))
        return torch.stack(losses).mean() if losses else batch.x[self.modalities[0]].sum() * 0

    def stage_loss(self, batch: Batch, stage: Stage):
        if stage.name != "teacher":
            return super().stage_loss(batch, stage)
        if self.config.mask_mode == "random":
            batch = batch.with_available(random_patterns(batch.present))
        logits, recon = self.reconstruct(batch)
        cls = task_loss(logits, batch, self.task)
        missing = (batch.present & ~batch.available & batch.utt_mask[..., None]).float()
        n = batch.utt_mask.sum().clamp(min=1)
        rec = reconstruction_error(recon, batch.x, missing).sum() / n
        nce = self.critic_loss(batch)
        loss = cls + self.config.lambda_rec * rec + self.config.lambda_nce * nce
        return loss, {"task": float(cls.detach()), "rec": float(rec.detach()),
                      "nce": float(nce.detach())}
