"""The reference code's HARDY-MER computation, by name (``HARDY-MER/HARDY-MER`` @ d23e95a).

``--reference-compat`` (``model.reference_compat=true``) selects every piece below at once;
each is also its own switch (see ``docs/hardymer.md``). Faithfulness is tested against numbers
the reference modules produced (``tools/reference_golden.py``,
``tests/test_reference_golden.py``), through the name mapping documented in ``docs/hardymer.md``.

* :class:`ReferenceTeacher` — ``models.EasyReconstructModel``: MoMKE's experts, stage 2 the
  *sum* of every expert's output (no router), one decoder ``3D -> 1024 -> a+t+v`` from the
  fused representation, six cross-attention heads and an entropy surrogate of mutual
  information ``MI(a, b) = H(a) + H(b) - H(joint)`` on softmax-normalised representations.
  Stage-1 loss ``L_a + L_t + L_v + L_rec + 0.001 L_MI``, stage 2 ``L_task + L_rec`` under the
  condition (``train_teacher.py``).
* :func:`batch_hardness` — ``train_our.py``: min-max of ``h_dir`` and ``MI`` over the whole
  padded batch, ``h = sigmoid(beta (alpha1 h_dir + alpha2 MI))``.
* :func:`view_ids` — ``retrieval.search_and_integrate`` / ``utils.secondary_filtering`` /
  ``retrieval.integrated_features``: per searched modality (order a, v, t) the top k+1, lists
  merged without duplicates, the first ``floor(h k) + 2`` kept (entry 0 the anchor), front
  padded with the anchor to k+1 views.
* :func:`rec_loss` / :func:`rec_per_utterance` — ``loss.MaskedReconLoss`` and
  ``MaskedBatchReconLoss``.
* :class:`ReferenceFinetuner` — ``models.FineTuning``: fc1 -> ReLU -> fc2 (**its pre-activation
  output is the feature**) -> ReLU -> fc3 -> ReLU -> fc4 -> ReLU -> fc5 -> softmax, trained with
  ``CrossEntropyLoss`` on the softmax output (a double softmax).

Reference bugs, each a switch whose default here is the reference's behaviour (the paper form
of HARDY-MER never uses them):

* ``attn_slip`` — ``CrossAttention(D_e, num_heads, mlp_ratio, drop_rate, attn_drop_rate)``
  passes ``mlp_ratio = 1`` as the attention dropout: p = 1.0, so in training every cross-
  attention output is its bias path, and at hardness time (eval) the heads are untrained;
* ``rec_target="masked"`` — the reconstruction target of the teacher and of ``h_dir`` is the
  masked input (zeros for a missing modality), not the true features;
* ``row_bug`` — rows flattened sequence-major (``(S, B, d) -> (S*B, d)``) meet masks and
  hardness flattened batch-major (``(B, S) -> (B*S)``): in ``MaskedReconLoss`` the utterance
  mask, and in the retrieval the hardness, land on the wrong rows when B > 1 and S > 1.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...data.dataset import Batch
from ...training.method import Stage, task_loss
from ..dropout import dropout as make_dropout
from ..momke import MoMKE, MoMKEConfig, Mlp
from .teacher import random_patterns

WIDTH = 1024      # the reference decoder's hidden width (models.py, ``nn.Linear(D, 1024)``)
PAIRS = (("a", "t"), ("a", "v"), ("t", "v"))


class ReferenceDecoder(nn.Module):
    """(B, S, F) fused -> {m: (B, S, d_m)}: one ``Linear -> ReLU -> Linear`` to all modalities
    concatenated (``autoencoder_decoder``)."""

    def __init__(self, fused_dim: int, dims: dict[str, int], width: int = WIDTH):
        super().__init__()
        self.dims = dict(dims)
        self.net = nn.Sequential(nn.Linear(fused_dim, width), nn.ReLU(),
                                 nn.Linear(width, sum(self.dims.values())))

    def forward(self, fused: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = self.net(fused).split(list(self.dims.values()), dim=-1)
        return dict(zip(self.dims, parts))


class CrossAttention(nn.Module):
    """Query modality attends to a key modality: ``x = proj(softmax(q k^T / sqrt(d_h)) v)``,
    ``out = x + MLP(x)``; keys are masked unless either modality is available there."""

    def __init__(self, dim: int, heads: int, attn_dropout: float, dropout: float,
                 dropout_impl: str = "bits"):
        super().__init__()
        self.heads, self.attn_dropout = heads, attn_dropout
        self.q, self.k, self.v, self.proj = (nn.Linear(dim, dim) for _ in range(4))
        self.drop = make_dropout(dropout, dropout_impl)
        self.mlp = Mlp(dim, dim, dim, dropout, dropout_impl)

    def forward(self, query: torch.Tensor, kv: torch.Tensor, key_mask: torch.Tensor):
        """query, kv (B, S, D); key_mask (B, S) bool -> (B, S, D)."""
        B, S, D = query.shape
        split = lambda t: t.view(B, S, self.heads, D // self.heads).transpose(1, 2)  # noqa: E731
        q = split(self.q(query)) * (D // self.heads) ** -0.5
        scores = q @ split(self.k(kv)).transpose(-2, -1)
        attn = scores.masked_fill(~key_mask[:, None, None, :], float("-inf")).softmax(-1)
        attn = F.dropout(attn, self.attn_dropout, self.training)
        attn = torch.nan_to_num(attn, nan=0.0)
        x = (attn @ split(self.v(kv))).transpose(1, 2).reshape(B, S, D)
        x = self.drop(self.proj(x))
        return x + self.mlp(x)


def softmax_entropy(feat: torch.Tensor) -> torch.Tensor:
    """``utils.information_entropy``: entropy of ``softmax(feat)`` (clamped at 1e-6), (..., D)
    -> (...)."""
    p = feat.softmax(-1).clamp(1e-6, 1.0)
    return -(p * torch.log(p + 1e-7)).sum(-1)


def entropy_mi(a: torch.Tensor, b: torch.Tensor, joint: torch.Tensor) -> torch.Tensor:
    """``utils.mutual_information``: ``H(a) + H(b) - H(joint)`` per utterance."""
    return softmax_entropy(a) + softmax_entropy(b) - softmax_entropy(joint)


def bug_rows(utt_mask: torch.Tensor) -> torch.Tensor:
    """The utterance mask as ``MaskedReconLoss`` pairs it with rows: row (b, s) is row
    ``s * B + b`` of the sequence-major flattening, so it reads entry ``s * B + b`` of the
    batch-major flattened mask. (B, S) -> (B, S)."""
    B, S = utt_mask.shape
    r = torch.arange(S, device=utt_mask.device)[None, :] * B + \
        torch.arange(B, device=utt_mask.device)[:, None]
    return utt_mask.reshape(-1)[r]


def rec_loss(recon: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
             missing: torch.Tensor, utt_mask: torch.Tensor, row_bug: bool) -> torch.Tensor:
    """``MaskedReconLoss``: ``sum_rows u sum_{m missing} ||x̂_m - x_m||^2 / d_m / sum u``.

    missing : (B, S, M) float — the condition's missing modalities at *every* position (the
    reference's mask does not know padding); ``u`` the utterance mask, on the wrong rows with
    ``row_bug``.
    """
    u = (bug_rows(utt_mask) if row_bug else utt_mask).to(missing.dtype)
    per = sum(missing[..., i] * (recon[m] - target[m]).pow(2).sum(-1) / recon[m].shape[-1]
              for i, m in enumerate(recon))
    return (per * u).sum() / utt_mask.sum().clamp(min=1)


def condition_missing(available: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, S, M) float: the modalities a batch's condition hides, at *every* position (the
    reference's mask does not know padding): missing where no utterance has it available."""
    seen = available.flatten(0, 1).any(0)
    return (~seen).to(dtype).expand(available.shape)


def rec_per_utterance(recon, target, missing, utt_mask) -> torch.Tensor:
    """``MaskedBatchReconLoss`` (B, S): ``sum_{m missing} mean_dims(((x̂_m - x_m) u)^2) / M``."""
    u = utt_mask.to(missing.dtype)[..., None]
    return sum(missing[..., i] * ((recon[m] - target[m]) * u).pow(2).mean(-1)
               for i, m in enumerate(recon)) / len(recon)


def batch_hardness(rec: np.ndarray, mi: np.ndarray, beta: float, alpha_dir: float,
                   alpha_ind: float) -> np.ndarray:
    """``train_our.py``: per-batch min-max (padding included; the reconstruction term only
    when its range exceeds 1e-5, divided by range + 1e-5), then the sigmoid. (B, S) -> (B, S)."""
    d = np.zeros_like(rec)
    if rec.max() - rec.min() > 1e-5:
        d = (rec - rec.min()) / (rec.max() - rec.min() + 1e-5)
    i = (mi - mi.min()) / (mi.max() - mi.min())
    return 1.0 / (1.0 + np.exp(-beta * (alpha_dir * d + alpha_ind * i)))


SEARCH_ORDER = ("a", "v", "t")   # search_and_integrate's order


def view_ids(database, query: dict[str, np.ndarray], searched, h: np.ndarray, k: int,
             row_bug: bool) -> np.ndarray:
    """Database rows of the k + 1 views of every position of a padded batch.

    query : {m: (B, S, d_m)} the features the search reads (zero where missing or padded:
        padded positions are searched too, as in the reference);
    searched : modalities searched (the condition's available ones);
    h : (B, S) hardness.

    Per position: the top k+1 of each searched modality in the order a, v, t (then any other
    modality), merged without duplicates; the first ``floor(h k) + 2`` kept, entry 0 the
    anchor; front padded with the anchor to k + 1. Returns (B, S, k + 1) row positions.
    """
    B, S = h.shape
    order = [m for m in SEARCH_ORDER if m in searched] + \
        [m for m in searched if m not in SEARCH_ORDER]
    found = []
    for m in order:     # rows of the sequence-major flattening: r = s * B + b
        q = np.ascontiguousarray(query[m].transpose(1, 0, 2).reshape(S * B, -1), np.float32)
        found.append(database.search_rows(m, q, k + 1)[1])
    found = np.concatenate(found, 1)                                    # (S*B, |order|(k+1))
    h_rows = h.reshape(-1) if row_bug else h.T.reshape(-1)              # per sequence-major row
    n_keep = (h_rows * k + 1).astype(np.int64) + 1                     # secondary_filtering
    out = np.empty((S * B, k + 1), np.int64)
    for r in range(S * B):
        kept = list(dict.fromkeys(found[r][found[r] >= 0].tolist()))[:min(n_keep[r], k + 1)]
        out[r] = [kept[0]] * (k + 1 - len(kept)) + kept
    return out.reshape(S, B, k + 1).transpose(1, 0, 2)


@dataclass
class ReferenceTeacherConfig(MoMKEConfig):
    lambda_mi: float = 0.001     # train_teacher.py: ``+ 0.001 * loss_mi``
    rec_target: str = "masked"   # "masked" (reference: zeros) or "true"
    attn_slip: bool = True       # cross-attention dropout p = 1.0 (reference) or attn_dropout
    row_bug: bool = True
    mask_mode: str = "condition"  # "random": a fresh random modality subset per utterance


class ReferenceTeacher(MoMKE):
    """``EasyReconstructModel``, trained by the shared Trainer under the cell's condition."""

    Config = ReferenceTeacherConfig
    stage_names = ("unimodal", "teacher")
    method_name = "hardymer-reference-teacher"

    def __init__(self, config: ReferenceTeacherConfig, dims, n_outputs, task):
        super().__init__(config, dims, n_outputs, task)
        D = config.hidden
        p_attn = 1.0 if config.attn_slip else config.attn_dropout
        self.cross = nn.ModuleDict({f"{q}_{k}": CrossAttention(D, config.heads, p_attn,
                                                               config.dropout,
                                                               config.dropout_impl)
                                    for a, b in PAIRS for q, k in ((a, b), (b, a))})
        self.decoder = ReferenceDecoder(len(self.modalities) * D, dims)

    def stages(self, epochs: list[int]) -> list[Stage]:
        e1, e2 = epochs
        return [Stage("unimodal", e1, apply_condition=False, select=False),
                Stage("teacher", e2, apply_condition=self.config.mask_mode == "condition",
                      select=False)]

    def outputs(self, batch: Batch, first_stage: bool) -> dict:
        """Everything ``EasyReconstructModel.forward`` returns, in our layout: ``logits``
        (B, S, C), ``unimodal`` {m: (B, S, C)} (stage 1), ``recon`` {m: (B, S, d_m)}, ``mi``
        {"at"/"av"/"tv": (B, S)}."""
        p = self._project(batch)
        masks = {m: batch.available[..., i] for i, m in enumerate(self.modalities)}
        if first_stage:
            h = {m: self.experts[m](p[m], masks[m]) for m in self.modalities}
        else:   # every modality through every expert, summed (no router)
            outs = self._through_experts(p, masks, self.modalities)       # e -> (M, B, S, D)
            total = sum(outs.values())
            h = {m: total[i] for i, m in enumerate(self.modalities)}
        r = torch.stack([h[m] for m in self.modalities], 2)               # (B, S, M, D)
        fused = self.fused(r * batch.available[..., None].to(r.dtype))
        mi = {}
        for a, b in PAIRS:
            i, j = self.modalities.index(a), self.modalities.index(b)
            keys = batch.available[..., i] | batch.available[..., j]
            joint = self.cross[f"{a}_{b}"](h[a], h[b], keys) + \
                self.cross[f"{b}_{a}"](h[b], h[a], keys)
            mi[a + b] = entropy_mi(h[a], h[b], joint)
        out = {"logits": self.head(fused), "recon": self.decoder(fused), "mi": mi}
        if first_stage:
            out["unimodal"] = {m: self.unimodal_heads[m](h[m]) for m in self.modalities}
        return out

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.outputs(batch, first_stage=False)["logits"]

    def targets(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Reconstruction targets: the masked input (reference) or the true features."""
        if self.config.rec_target == "true":
            return batch.x
        return {m: batch.x[m] * batch.available[..., i, None].to(batch.x[m].dtype)
                for i, m in enumerate(self.modalities)}

    def condition_missing(self, batch: Batch) -> torch.Tensor:
        """(B, S, M) float: the condition's missing modalities at every position (with random
        masks: each utterance's own)."""
        dtype = batch.x[self.modalities[0]].dtype
        if self.config.mask_mode == "random":
            return (batch.present & ~batch.available).to(dtype)
        return condition_missing(batch.available, dtype)

    def stage_loss(self, batch: Batch, stage: Stage):
        first = stage.name == "unimodal"
        if not first and self.config.mask_mode == "random":
            batch = batch.with_available(random_patterns(batch.present))
        o = self.outputs(batch, first)
        rec = rec_loss(o["recon"], self.targets(batch), self.condition_missing(batch),
                       batch.utt_mask, self.config.row_bug)
        if first:
            parts = {m: task_loss(lo, batch, self.task) for m, lo in o["unimodal"].items()}
            mi = -sum(o["mi"].values()).sum() / 3     # every position, padding included
            loss = sum(parts.values()) + rec + self.config.lambda_mi * mi
            return loss, {**{f"loss_{m}": float(v.detach()) for m, v in parts.items()},
                          "rec": float(rec.detach()), "mi": float(mi.detach())}
        cls = task_loss(o["logits"], batch, self.task)
        return cls + rec, {"task": float(cls.detach()), "rec": float(rec.detach())}

    @torch.no_grad()
    def terms(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw per-utterance terms (B, S): the reconstruction error ``h_dir`` and the summed
        MI surrogate (the reference counts *high* MI as hard)."""
        o = self.outputs(batch, first_stage=False)
        rec = rec_per_utterance(o["recon"], self.targets(batch), self.condition_missing(batch),
                                batch.utt_mask)
        return rec, sum(o["mi"].values())

    @torch.no_grad()
    def hardness(self, batch: Batch, beta: float, alpha_dir: float, alpha_ind: float
                 ) -> np.ndarray:
        """(B, S) per-batch hardness of ``train_our.py`` (eval mode, stage-2 path)."""
        rec, mi = self.terms(batch)
        return batch_hardness(rec.double().cpu().numpy(), mi.double().cpu().numpy(), beta,
                              alpha_dir, alpha_ind)


class ReferenceFinetuner(nn.Module):
    """``models.FineTuning(d, C)``; :meth:`features` is fc2's pre-activation output."""

    def __init__(self, dim: int, n_outputs: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.fc3, self.fc4 = nn.Linear(dim, dim // 2), nn.Linear(dim // 2, dim // 4)
        self.fc5 = nn.Linear(dim // 4, n_outputs)
        self.n_outputs = n_outputs

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities (softmax, as the reference returns them) or a regression value."""
        h = torch.relu(self.fc4(torch.relu(self.fc3(torch.relu(self.features(x))))))
        out = self.fc5(h)
        return out.softmax(-1) if self.n_outputs > 1 else out

    def loss(self, x: torch.Tensor, y: torch.Tensor, double_softmax: bool = True):
        """``CrossEntropyLoss`` on the softmax output (reference) or on the logits."""
        out = self(x)
        if self.n_outputs == 1:
            return F.mse_loss(out[:, 0], y.float())
        return F.cross_entropy(out if double_softmax else torch.log(out), y)


@torch.no_grad()
def view_batches(batch: Batch, cfg, database, features: dict, teacher=None,
                 plan_h: np.ndarray | None = None,
                 labels: np.ndarray | None = None) -> list[Batch]:
    """The k + 1 views of a training batch (``train_our.py``): the same positions, each
    utterance replaced by the complete features of one of its views, under the query's
    availability and with the query's label (``support_labels="query"``, the reference's), or
    with the view utterance's own label (``"own"``: ``labels``, indexed like ``features``).

    ``h``: the reference teacher's per-batch hardness, else ``plan_h`` (B, S), else 1 (no
    hardness: every view a neighbour). ``features`` are the arrays the database rows index.
    """
    B, S = batch.utt_mask.shape
    mods = batch.modalities
    if teacher is not None:
        h = teacher.hardness(batch, cfg.sigmoid_beta, cfg.alpha_dir, cfg.alpha_ind)
    elif plan_h is not None:
        h = plan_h
    else:
        h = np.ones((B, S))
    query = {m: (batch.x[m] * batch.available[..., i, None].to(batch.x[m].dtype)).cpu().numpy()
             for i, m in enumerate(mods)}
    seen = batch.available.flatten(0, 1).any(0).tolist()
    searched = [m for m, s in zip(mods, seen) if s]
    rows = view_ids(database, query, searched, h, cfg.k, cfg.row_bug)      # (B, S, k+1)
    gids = database.ids[rows]
    own = None
    if cfg.support_labels == "own":
        if labels is None:
            raise ValueError("support_labels='own' needs the views' labels")
        own = torch.from_numpy(np.asarray(labels)[gids]).to(batch.labels)    # (B, S, k+1)
    out = []
    for j in range(cfg.k + 1):
        x = {m: torch.from_numpy(np.asarray(features[m][gids[..., j].reshape(-1)])
                                 .reshape(B, S, -1)).to(batch.x[m]) for m in mods}
        view = replace(batch, x=x)
        if own is not None:
            view = replace(view, labels=torch.where(batch.utt_mask, own[..., j], batch.labels))
        out.append(view)
    return out
