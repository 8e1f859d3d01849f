"""PriMD — Primitive Memory Distillation (Zhang et al., arXiv 2608.30563; code
``JiaqiZhang-Sengoku/PriMD``, ``PriMD/model_primd.py``, ``train_PriMD.py``, ``loss.py``).

Per utterance, no context. A teacher and a student of the same shape; per modality each has an
encoder (Linear -> ReLU -> Dropout), a *shared* and a *specific* MLP (D -> D -> D) and a
unimodal head on ``[S^m; P^m]``. Joint feature = ``[mean_m S^m; P^1; ...; P^M]`` -> Linear ->
ReLU -> Dropout -> Linear.

* Stage 1, ``teacher`` (complete modalities, as the reference's ``generate_mask`` gives in its
  first stage): ``CE(joint) + mean_m CE(head_m) + 0.1 L_align + 0.01 L_indep + 0.1 L_VQ`` with
  L_align the mean pairwise MSE of the shared features (SSSD), L_indep an RBF-kernel HSIC
  between shared and specific features of each modality (bandwidth = median squared distance,
  at most the first 256 utterances), and L_VQ = MSE(sg P -> e) + beta MSE(P -> sg e) between
  each specific feature and its nearest entry of a C x D *primitive memory* per modality (DPMC).
* Stage 2, ``student`` (under the condition): at its first epoch the student is copied from the
  teacher; teacher and memories are frozen. The student's shared features are averaged over the
  *available* modalities; that query attends over each modality's C primitives (``q.k/sqrt
  d_r``), keeps the top K_max, forms the cumulative weighted means for r = 1..K_max, and an MLP
  picks how many (Gumbel-softmax with tau in training, softmax(logits/tau) in evaluation); the
  mix replaces the specific feature of each *missing* modality (DRAD). Loss = ``CE + KD +
  cost``: KD = tau_KD^2 KL(teacher || student) at temperature tau_KD with the teacher run on the
  complete features (MSE to the teacher's output for regression), cost = sum_m sum_r pi_r
  (e^{r/K_max} - 1) on the missing modalities, mean over utterances.

Shapes: B sequences of S utterances, D = ``hidden``, M modalities, C = ``memory_size``.

Faithful to the released code in: separate teacher and student modules, the teacher run in the
student's train/eval mode under no_grad for KD (its dropout is on in training, as there), HSIC
on the first 256 utterances in batch-major order with ``torch.median`` of the full distance
matrix, VQ and align losses on every real utterance, the stage-2 loss without the unimodal
heads, one Adam over all parameters (frozen ones get no gradient, so Adam skips them).

Deviations, all deliberate:

* Selection: the released code picks the best epoch on the *test* split over *all* epochs,
  teacher epochs included, where the test is scored by the teacher on all three modalities;
  ours selects among student epochs under our protocol. ``reference_selection=true`` (with
  ``train.protocol=paper``) gives the released behaviour: teacher epochs compete, and before
  the student exists ``forward`` runs the teacher on every modality the data holds (it reads
  hidden modalities: that is the leak, kept only under this name).
* Data that lack a modality for some utterances (the reference cannot have them): stage-1
  unimodal, HSIC and VQ terms skip those utterances, alignment pairs skip them too.
* Any modalities, not only a, t, v; the joint width is (1 + M) D.
* ``joint="paper"``: the paper's Eq. 6 concatenates every (S^m, P^m), 2 M D wide (missing S^m
  are zero, as the code's masked shared features); the code's (1 + M) D is the default. The
  ``paper-config`` ablation adds the paper's Table 8 training values (AdamW, d = 128, dropout
  0.3, batch 32), which differ from the released scripts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.dataset import Batch
from ..training.method import Ablation, Method, Stage, task_loss
from .registry import register_method


@dataclass
class PriMDConfig:
    """Hyper-parameters; defaults are the released IEMOCAP-4 script and model defaults."""

    hidden: int = 256            # D (--hidden=256, run_PriMD_iemocap4.sh)
    dropout: float = 0.5         # --drop_rate=0.5 (encoders, MLPs, classifier)
    memory_size: int = 64        # C, --primitive-capacity
    retrieval_dim: int = 64      # d_r, --retrieval-dim
    k_max: int = 16              # K_max, --k-max
    gumbel_tau: float = 0.5      # --gumbel-tau (the paper's gamma)
    kd_temp: float = 4.0         # tau_KD, --kd-temp
    lambda_align: float = 0.1    # --lambda-align
    lambda_indep: float = 0.01   # --lambda-indep
    lambda_vq: float = 0.1       # --lambda-vq
    beta_vq: float = 0.2         # --vq-beta (commitment weight)
    hsic_max: int = 256          # utterances per HSIC (model_primd.py _rbf_kernel)
    joint: str = "code"          # "code": [mean S; P^1..P^M]; "paper": every [S^m; P^m] (Eq. 6)
    optimizer: str = "adam"      # "adam" (train_PriMD.py) or "adamw" (paper Table 8)
    reference_selection: bool = False  # teacher epochs compete, scored on all modalities


class _Branch(nn.Module):
    """One network (teacher or student): per-modality encoder, shared and specific MLPs,
    unimodal heads, and the joint classifier."""

    def __init__(self, dims: dict[str, int], cfg: PriMDConfig, n_outputs: int, joint_dim: int):
        super().__init__()
        D = cfg.hidden

        def mlp(d_in, d_out):
            return nn.Sequential(nn.Linear(d_in, D), nn.ReLU(), nn.Dropout(cfg.dropout),
                                 nn.Linear(D, d_out))

        self.encoders = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, D), nn.ReLU(),
                                                        nn.Dropout(cfg.dropout))
                                       for m, d in dims.items()})
        self.shared = nn.ModuleDict({m: mlp(D, D) for m in dims})
        self.specific = nn.ModuleDict({m: mlp(D, D) for m in dims})
        self.heads = nn.ModuleDict({m: nn.Linear(2 * D, n_outputs) for m in dims})
        self.classifier = nn.Sequential(nn.Linear(joint_dim, 2 * D), nn.ReLU(),
                                        nn.Dropout(cfg.dropout), nn.Linear(2 * D, n_outputs))

    def encode(self, x: dict[str, torch.Tensor], obs: torch.Tensor):
        """x: m -> (B, S, d_m); obs (B, S, M) float 0/1 -> shared, specific: m -> (B, S, D),
        zero where the modality is not observed."""
        shared, specific = {}, {}
        for i, m in enumerate(self.encoders):
            o = obs[..., i, None]
            # masked_fill, not a product: hidden values never get in, even inf or NaN.
            h = self.encoders[m](x[m].masked_fill(o == 0, 0.0)) * o
            shared[m], specific[m] = self.shared[m](h) * o, self.specific[m](h) * o
        return shared, specific


def _mean_shared(shared: dict[str, torch.Tensor], obs: torch.Tensor) -> torch.Tensor:
    """Mean of the shared features over observed modalities: (B, S, D)."""
    stacked = torch.stack(list(shared.values()), dim=2)                  # (B, S, M, D)
    return (stacked * obs[..., None]).sum(2) / obs.sum(2, keepdim=True).clamp(min=1.0)


def _rbf(x: torch.Tensor) -> torch.Tensor:
    """RBF kernel (n, n) with the median squared distance (diagonal included) as bandwidth."""
    dist = torch.cdist(x, x).pow(2)
    sigma = torch.median(dist.detach()).clamp(min=1e-6)
    return torch.exp(-dist / (2.0 * sigma))


def hsic(s: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Biased HSIC estimate ``tr(K_s H K_p H) / (n - 1)^2`` of rows s, p (n, D)."""
    n = s.size(0)
    center = torch.eye(n, dtype=s.dtype, device=s.device) - 1.0 / n
    return torch.trace(_rbf(s) @ center @ _rbf(p) @ center) / (n - 1) ** 2


@register_method("primd")
class PriMD(Method):
    """Teacher with shared/specific features and primitive memories; a student that fills each
    missing modality's specific feature from retrieved primitives, distilled from the teacher.

    ``forward``: (B, S, n_outputs), from the student (the teacher before the student exists,
    under ``reference_selection`` only).

    Examples
    --------
    >>> from hardymer.models import create_method
    >>> m = create_method("primd", dims={"a": 8, "t": 8, "v": 8}, n_outputs=4,
    ...                   task="classification", hidden=16, memory_size=8, k_max=4)
    >>> [s.name for s in m.stages([2, 3])]
    ['teacher', 'student']
    """

    Config = PriMDConfig
    stage_names = ("teacher", "student")
    ablations = {
        # Paper Table 8's training values where the released scripts differ (d, dropout,
        # optimizer, batch) and Eq. 6's joint feature.
        "paper-config": Ablation(("model.joint=paper", "model.hidden=128", "model.dropout=0.3",
                                  "model.optimizer=adamw", "train.batch_size=32"), ""),
    }

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        if config.joint not in ("code", "paper"):
            raise ValueError(f"model.joint={config.joint!r}; expected 'code' (the released "
                             "(1+M)D joint feature) or 'paper' (Eq. 6, every [S^m; P^m])")
        if config.optimizer not in ("adam", "adamw"):
            raise ValueError(f"model.optimizer={config.optimizer!r}; expected 'adam' or 'adamw'")
        if not 0 < config.k_max <= config.memory_size:
            raise ValueError(f"model.k_max={config.k_max}; expected 1..model.memory_size "
                             f"({config.memory_size})")
        for name in ("gumbel_tau", "kd_temp"):
            if getattr(config, name) <= 0:
                raise ValueError(f"model.{name}={getattr(config, name)!r}; expected > 0")
        if config.hsic_max < 2:
            raise ValueError(f"model.hsic_max={config.hsic_max}; expected >= 2")

    def __init__(self, config: PriMDConfig, dims, n_outputs, task):
        super().__init__(config, dims, n_outputs, task)
        D, M = config.hidden, len(self.modalities)
        joint = (1 + M) * D if config.joint == "code" else 2 * M * D
        self.teacher = _Branch(self.dims, config, n_outputs, joint)
        self.student = _Branch(self.dims, config, n_outputs, joint)
        self.memory = nn.ParameterDict({m: nn.Parameter(torch.randn(config.memory_size, D) * 0.02)
                                        for m in self.modalities})
        self.retrieve_q = nn.ModuleDict({m: nn.Linear(D, config.retrieval_dim)
                                         for m in self.modalities})
        self.retrieve_k = nn.ModuleDict({m: nn.Linear(D, config.retrieval_dim)
                                         for m in self.modalities})
        self.retrieve_num = nn.ModuleDict({m: nn.Sequential(
            nn.Linear(D, D), nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(D, config.k_max))
            for m in self.modalities})
        # Saved with the weights: a resumed or reloaded run knows the student was seeded.
        self.register_buffer("student_ready", torch.zeros((), dtype=torch.bool))

    def stages(self, epochs: list[int]) -> list[Stage]:
        e1, e2 = epochs
        return [Stage("teacher", e1, apply_condition=False,
                      select=self.config.reference_selection),
                Stage("student", e2)]

    def configure_optimizer(self, lr, weight_decay, fused=False):
        cls = torch.optim.AdamW if self.config.optimizer == "adamw" else torch.optim.Adam
        return cls(self.parameters(), lr=lr, weight_decay=weight_decay, fused=fused or None)

    def on_epoch_start(self, epoch: int, stage: Stage, data) -> None:
        if stage.name != "student":
            return
        if not bool(self.student_ready):      # train_PriMD.py: start_student_stage()
            self.student.load_state_dict(self.teacher.state_dict())
            self.student_ready.fill_(True)
        for p in list(self.teacher.parameters()) + list(self.memory.parameters()):
            p.requires_grad_(False)           # again after a resume: flags are not saved

    # --- pieces -------------------------------------------------------------------------------
    def _joint(self, branch: _Branch, shared, specific, obs) -> torch.Tensor:
        if self.config.joint == "code":
            parts = [_mean_shared(shared, obs)] + [specific[m] for m in self.modalities]
        else:
            parts = [t for m in self.modalities for t in (shared[m], specific[m])]
        return branch.classifier(torch.cat(parts, -1))

    def teacher_logits(self, batch: Batch, available: torch.Tensor):
        """Teacher on the modalities ``available`` (B, S, M): joint logits (B, S, C), unimodal
        logits m -> (B, S, C), shared and specific features m -> (B, S, D)."""
        obs = available.to(batch.x[self.modalities[0]].dtype)
        shared, specific = self.teacher.encode(batch.x, obs)
        uni = {m: self.teacher.heads[m](torch.cat([shared[m], specific[m]], -1))
               for m in self.modalities}
        return self._joint(self.teacher, shared, specific, obs), uni, shared, specific

    def retrieve(self, query: torch.Tensor, m: str):
        """Compensation for modality ``m`` from its primitives (DRAD).

        query (B, S, D) -> comp (B, S, D), per-utterance cost (B, S), choice pi (B, S, K_max),
        top-K attention weights (B, S, K_max).
        """
        cfg = self.config
        memory = self.memory[m]                                           # (C, D)
        q, k = self.retrieve_q[m](query), self.retrieve_k[m](memory)     # (B, S, d_r), (C, d_r)
        attn = (q @ k.T / math.sqrt(cfg.retrieval_dim)).softmax(-1)      # (B, S, C)
        top, idx = attn.topk(cfg.k_max, dim=-1)                          # (B, S, K)
        means = (top[..., None] * memory[idx]).cumsum(-2) / \
            top.cumsum(-1)[..., None].clamp(min=1e-6)                    # (B, S, K, D)
        logits = self.retrieve_num[m](query)                             # (B, S, K)
        pi = (F.gumbel_softmax(logits, tau=cfg.gumbel_tau, hard=False, dim=-1) if self.training
              else (logits / cfg.gumbel_tau).softmax(-1))
        ranks = torch.arange(1, cfg.k_max + 1, dtype=query.dtype, device=query.device)
        cost = (pi * (torch.exp(ranks / cfg.k_max) - 1.0)).sum(-1)
        return (pi[..., None] * means).sum(-2), cost, pi, top

    def student_outputs(self, batch: Batch):
        """Student logits (B, S, C) and the summed retrieval cost per utterance (B, S)."""
        obs = batch.available.to(batch.x[self.modalities[0]].dtype)
        shared, specific = self.student.encode(batch.x, obs)
        query = _mean_shared(shared, obs)
        real = batch.utt_mask.to(obs.dtype)[..., None]
        final, cost = {}, torch.zeros_like(real[..., 0])
        for i, m in enumerate(self.modalities):
            missing = (1.0 - obs[..., i, None]) * real
            if bool(missing.any()):
                comp, c, _, _ = self.retrieve(query, m)
                final[m] = specific[m] + missing * comp      # specific is 0 where missing
                cost = cost + c * missing[..., 0]
            else:
                final[m] = specific[m]
        return self._joint(self.student, shared, final, obs), cost

    # --- Method API ---------------------------------------------------------------------------
    def forward(self, batch: Batch) -> torch.Tensor:
        if self.config.reference_selection and not bool(self.student_ready):
            # The released selection's teacher epochs: every modality the data holds.
            return self.teacher_logits(batch, batch.present & batch.utt_mask[..., None])[0]
        return self.student_outputs(batch)[0]

    def teacher_loss(self, batch: Batch):
        """Stage 1's loss and parts (complete data: ``available`` = what the data holds)."""
        cfg, avail = self.config, batch.available
        logits, uni, shared, specific = self.teacher_logits(batch, avail)
        task = task_loss(logits, batch, self.task)
        unimodal = sum(task_loss(uni[m], batch, self.task, mask=avail[..., i])
                       for i, m in enumerate(self.modalities)) / len(self.modalities)
        align = self.align_loss(shared, avail)
        indep = self.indep_loss(shared, specific, avail)
        vq = self.vq_loss(specific, avail)
        loss = task + unimodal + cfg.lambda_align * align + cfg.lambda_indep * indep \
            + cfg.lambda_vq * vq
        return loss, {"task": task, "unimodal": unimodal, "align": align, "indep": indep,
                      "vq": vq}

    def align_loss(self, shared, avail) -> torch.Tensor:
        """Mean over modality pairs of MSE(S^m, S^n) on utterances holding both."""
        total, pairs = shared[self.modalities[0]].new_zeros(()), 0
        for i, m in enumerate(self.modalities):
            for j in range(i + 1, len(self.modalities)):
                rows = avail[..., i] & avail[..., j]
                if rows.any():
                    total = total + F.mse_loss(shared[m][rows], shared[self.modalities[j]][rows])
                    pairs += 1
        return total / max(pairs, 1)

    def indep_loss(self, shared, specific, avail) -> torch.Tensor:
        """Mean over modalities of HSIC(S^m, P^m) on the first ``hsic_max`` utterances."""
        total, count = shared[self.modalities[0]].new_zeros(()), 0
        for i, m in enumerate(self.modalities):
            rows = avail[..., i]
            s, p = shared[m][rows][:self.config.hsic_max], specific[m][rows][:self.config.hsic_max]
            if s.size(0) >= 2:
                total, count = total + hsic(s, p), count + 1
        return total / max(count, 1)

    def vq_loss(self, specific, avail) -> torch.Tensor:
        """Per modality ``MSE(e, sg P) + beta MSE(P, sg e)`` with e the nearest primitive of each
        specific feature; summed over modalities / M."""
        total = specific[self.modalities[0]].new_zeros(())
        for i, m in enumerate(self.modalities):
            p = specific[m][avail[..., i]]
            if p.numel() == 0:
                continue
            memory = self.memory[m]
            dist = p.pow(2).sum(1, keepdim=True) - 2 * p @ memory.T + memory.pow(2).sum(1)
            z = memory[dist.argmin(1)]
            total = total + F.mse_loss(z, p.detach()) + self.config.beta_vq * \
                F.mse_loss(p, z.detach())
        return total / len(self.modalities)

    def student_loss(self, batch: Batch):
        """Stage 2's ``CE + KD + cost`` and parts."""
        logits, cost = self.student_outputs(batch)
        task = task_loss(logits, batch, self.task)
        valid = batch.utt_mask.to(logits.dtype)
        n = valid.sum().clamp(min=1.0)
        with torch.no_grad():   # the teacher on the complete features, in the same mode
            teacher = self.teacher_logits(batch, batch.present & batch.utt_mask[..., None])[0]
        if self.task == "classification":
            T = self.config.kd_temp
            kd = F.kl_div(F.log_softmax(logits / T, -1), F.softmax(teacher / T, -1),
                          reduction="none").sum(-1)
            kd = (kd * valid).sum() / n * T ** 2
        else:
            kd = ((logits[..., 0] - teacher[..., 0]).pow(2) * valid).sum() / n
        cost = (cost * valid).sum() / n
        return task + kd + cost, {"task": task, "kd": kd, "cost": cost}

    def stage_loss(self, batch: Batch, stage: Stage):
        loss, parts = (self.teacher_loss if stage.name == "teacher" else self.student_loss)(batch)
        return loss, {k: float(v.detach()) for k, v in parts.items()}
