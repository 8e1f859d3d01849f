"""CPM-Nets — Cross Partial Multi-View Networks (Zhang, Han, Fu, Zhou, Hu, NeurIPS 2019; code
``hanmenghan/CPM_Nets``, TensorFlow 1; GCNet's port ``zeroQiaoba/GCNet/baseline-cpmnet``).

No encoder. Every training utterance n owns a free latent vector h_n (a row of a learned table
indexed by the global utterance index), and one decoder per modality maps h back to that
modality's features. Training minimises

    sum_n sum_{m available} ||dec_m(h_n) - x_n^m||^2  +  lambda * sum_n hinge_n

where the structured hinge compares h_n with the classes' training latents: with
F_k(h_n) = mean over the *other* training latents h_j of class k of <h_n, h_j> and the predicted
class y^ = argmax_k F_k, hinge_n = relu(1[y^ != y_n] + F_y^ - F_y_n) (zero when y^ = y_n; the
paper's Eq. 7 with Delta the 0/1 loss). The hinge moves only the latents; the decoders see only
the reconstruction. At test time a fresh latent per utterance is fitted to reconstruct its
*available* modalities with the decoders frozen, then classified by the class whose training
latents have the highest mean dot product with it (``classfiy.ave``), i.e. <h, centre_k>.

Shapes: B sequences of S utterances, L = ``latent_dim``, N = utterances of the data set,
C classes. ``latents`` (N, L) parameter; ``train_class`` (N,) long buffer (hinge class of each
training utterance, -1 elsewhere); ``centres`` (C, L) buffer; ``forward`` -> (B, S, C) scores
<h, centre_k> (classification) or (B, S, 1) values (regression).

Faithful to the reference code in: decoders = one linear map per modality (the port's
``layer_size = [[dim]]``), Xavier-uniform init of weights and of the latent table (bound from
the training-set size), zero biases; sums (not means) for both losses; lambda 10 and latent
size 512 (port defaults); lr 1e-3 for decoders and test latents, 1e-2 for training latents,
Adam everywhere; test latents fitted by reconstruction only for 100 x 5 Adam steps; nearest
class by mean dot product. Sample-level: no sequence context.

Deviations, each named:
- The reference alternates, per epoch, 5 full-batch Adam steps on the decoders then 5 on the
  latents. Our trainer takes one step per batch with one optimizer, so both move together in
  one step, as two parameter groups (``decoder_lr_scale`` and ``latent_lr_scale`` times
  ``train.lr``). The decoders' gradient is still the reconstruction's alone and the latents'
  that of reconstruction + lambda * hinge, as in the reference. ``default.yaml`` keeps full
  batch (all training dialogues in one step); with mini-batches the hinge's class means are
  over the batch, and Adam's momentum keeps moving table rows absent from a batch.
- The hinge skips an utterance whose class has no other latent in the batch and ignores
  classes absent from it (the reference divides by zero there).
- Test latents start at zero, not Xavier-random: deterministic, and each utterance's fit is
  independent of the rest of the batch (Adam is element-wise and the loss a sum over rows).
  An utterance with no available modality keeps h = 0 (all scores 0: class 0).
- The paper also fine-tunes the decoders before the test fit ("retuned networks"); the code,
  and we, keep them frozen.
- Prediction needs the classes' mean training latents: ``centres`` is recomputed from the
  table each time the model is switched to eval mode (the trainer does before every
  evaluation), and saved with it, so a reloaded model predicts without the table's labels
  being attached again. Before any training the centres are random. Eval mode always fits
  fresh latents, on the training split too.
- Regression (CMU): GCNet's port does *not* regress; it drops zero labels, binarises the sign
  and runs the classifier above. We keep that hinge on the two sign classes (zero labels
  excluded) and add a linear head on h trained with summed squared error (weight 1, gradients
  into the head and the latents), whose value is the prediction (so MAE and Corr exist).
- The table has a row for every utterance of the data set (only training rows are trained):
  its size is known in ``attach``; loading a checkpoint into a method built without ``attach``
  (``hardymer evaluate``) resizes the table and ``train_class`` from the checkpoint first.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.dataset import Batch
from ..training.method import Method, Stage
from .registry import register_method


@dataclass
class CPMNetsConfig:
    """Hyper-parameters; defaults are GCNet's port's (``test_lianzheng.py``) values."""

    latent_dim: int = 512          # --lsd-dim
    lamb: float = 10.0             # --lamb: weight of the structured hinge
    decoder_lr_scale: float = 1.0  # decoders' lr = train.lr * this (reference 1e-3)
    latent_lr_scale: float = 10.0  # training latents' lr = train.lr * this (reference 1e-2)
    test_steps: int = 500          # Adam steps fitting a test latent (--epochs-test 100 x 5)
    test_lr: float = 1e-3          # their lr (the reference's learning_rate[0])


def xavier_uniform(rows: int, cols: int, fan: int | None = None) -> torch.Tensor:
    """U(-b, b), b = sqrt(6 / (fan + cols)): the reference's ``xavier_init(fan, cols)``."""
    bound = math.sqrt(6.0 / ((rows if fan is None else fan) + cols))
    return torch.empty(rows, cols).uniform_(-bound, bound)


def structured_hinge(h: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Sum over samples of relu(1[y^ != y] + F_y^ - F_y), F_k = mean <h_n, h_j>, j != n in k.

    Parameters
    ----------
    h : Tensor (N, L)
    y : LongTensor (N,) in [0, n_classes)
    """
    sim = (h @ h.T).masked_fill(torch.eye(len(h), dtype=torch.bool, device=h.device), 0.0)
    onehot = F.one_hot(y, n_classes).to(h.dtype)                  # (N, C)
    others = onehot.sum(0, keepdim=True) - onehot                 # same-class others per sample
    mean = (sim @ onehot) / others.clamp(min=1)
    mean = mean.masked_fill(others == 0, float("-inf"))           # no member: not a candidate
    ok = others.gather(1, y[:, None])[:, 0] > 0                   # own class has another member
    mean, y = mean[ok], y[ok]
    best, pred = mean.max(1)
    own = mean.gather(1, y[:, None])[:, 0]
    return torch.relu((pred != y).to(h.dtype) + best - own).sum()


def _resize_from_checkpoint(module, state_dict, prefix, *_):
    # ``hardymer evaluate`` builds the method without ``attach``: take the table's size from
    # the checkpoint so that the strict load goes through.
    for name in ("latents", "train_class"):
        saved, have = state_dict.get(prefix + name), getattr(module, name)
        if saved is not None and saved.shape != have.shape:
            new = torch.empty(saved.shape, dtype=have.dtype, device=have.device)
            setattr(module, name, nn.Parameter(new) if name == "latents" else new)


@register_method("cpm-nets")
class CPMNets(Method):
    """Free per-utterance latents, per-modality decoders, nearest-class-centre prediction.

    Examples
    --------
    >>> from hardymer.models import create_method
    >>> m = create_method("cpm-nets", dims={"a": 8, "t": 8, "v": 8}, n_outputs=4,
    ...                   task="classification", latent_dim=16)
    >>> tuple(m.latents.shape)   # allocated by attach()
    (0, 16)
    """

    Config = CPMNetsConfig
    loss_reduction = "sum"        # the reference sums its reconstruction and hinge terms
    budget_fields = ("test_steps",)   # the test latents' fitting: scaled by budget.scale too

    def __init__(self, config: CPMNetsConfig, dims, n_outputs, task):
        super().__init__(config, dims, n_outputs, task)
        L = config.latent_dim
        self.n_hinge_classes = n_outputs if task == "classification" else 2  # sign classes
        self.decoders = nn.ModuleDict()
        for m, d in dims.items():
            lin = nn.Linear(L, d)
            with torch.no_grad():
                lin.weight.copy_(xavier_uniform(L, d).T)
                lin.bias.zero_()
            self.decoders[m] = lin
        self.head = nn.Linear(L, 1) if task == "regression" else None
        self.latents = nn.Parameter(torch.empty(0, L))
        self.register_buffer("train_class", torch.empty(0, dtype=torch.long))
        self.register_buffer("centres", xavier_uniform(self.n_hinge_classes, L))
        self.register_load_state_dict_pre_hook(_resize_from_checkpoint)

    # --- set-up -------------------------------------------------------------------------------
    def attach(self, context, data, workdir) -> None:
        """Allocate the latent table (one row per utterance) and mark the training rows."""
        ds = data.dataset
        rows = torch.as_tensor(ds.rows_of(data.fold.train), dtype=torch.long)
        device = self.centres.device
        table = xavier_uniform(ds.n_utterances, self.config.latent_dim, fan=len(rows))
        self.latents = nn.Parameter(table.to(device))
        cls = torch.full((ds.n_utterances,), -1, dtype=torch.long)
        cls[rows] = self._hinge_classes(torch.as_tensor(ds.labels)[rows])
        self.train_class = cls.to(device)

    def configure_optimizer(self, lr: float, weight_decay: float,
                            fused: bool = False) -> torch.optim.Optimizer:
        """Adam, two groups: networks (decoders, head) and the latent table (no decay)."""
        nets = [p for n, p in self.named_parameters() if n != "latents"]
        return torch.optim.Adam([
            {"params": nets, "lr": lr * self.config.decoder_lr_scale,
             "weight_decay": weight_decay},
            {"params": [self.latents], "lr": lr * self.config.latent_lr_scale,
             "weight_decay": 0.0}], lr=lr, fused=fused or None)

    def train(self, mode: bool = True):
        super().train(mode)
        if not mode:
            self.refresh_centres()
        return self

    @torch.no_grad()
    def refresh_centres(self) -> None:
        """centres[k] = mean of the training latents of hinge class k (kept if none trained)."""
        keep = self.train_class >= 0
        if not keep.any():
            return
        onehot = F.one_hot(self.train_class[keep], self.n_hinge_classes).to(self.latents.dtype)
        sums = onehot.T @ self.latents.detach()[keep]          # matmul: deterministic on GPU
        self.centres.copy_(sums / onehot.sum(0).clamp(min=1)[:, None])

    def _hinge_classes(self, labels: torch.Tensor) -> torch.Tensor:
        """Class ids for the hinge; regression: 1 positive, 0 negative, -1 zero (skipped)."""
        if self.task == "classification":
            return labels.long()
        return torch.where(labels == 0, -1, (labels > 0).long())

    # --- pieces -------------------------------------------------------------------------------
    def reconstruction_error(self, h: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Squared error of each available modality's reconstruction, summed. (B, S)."""
        return self._error(h, batch.x, batch.available)

    def _error(self, h, x: dict[str, torch.Tensor], available: torch.Tensor) -> torch.Tensor:
        """h (..., L), x[m] (..., d_m), available (..., M) -> (...)."""
        err = h.new_zeros(h.shape[:-1])
        for i, m in enumerate(self.modalities):
            e = (self.decoders[m](h) - x[m]).pow(2).sum(-1)
            err = err + torch.where(available[..., i], e, 0.0)  # hidden values: no effect
        return err

    def table_latents(self, batch: Batch) -> torch.Tensor:
        """Training latents of the batch's utterances. (B, S, L); padding reads row 0."""
        if self.latents.shape[0] == 0:
            raise RuntimeError("cpm-nets: the latent table is empty; call attach() first")
        return F.embedding(batch.index.clamp(min=0), self.latents)

    def fit_latents(self, batch: Batch, steps: int | None = None) -> torch.Tensor:
        """Fresh latents fitted to the available modalities, decoders frozen. (B, S, L)."""
        steps = self.config.test_steps if steps is None else steps
        real = batch.utt_mask                    # fit real utterances only: padding is free
        x = {m: v[real] for m, v in batch.x.items()}
        available = batch.available[real]
        h = x[self.modalities[0]].new_zeros(len(available), self.config.latent_dim)
        h.requires_grad_(True)
        opt = torch.optim.Adam([h], lr=self.config.test_lr)
        with torch.enable_grad():  # the trainer evaluates under no_grad
            for _ in range(steps):
                # autograd.grad w.r.t. h only: the decoders' .grad stay untouched
                (h.grad,) = torch.autograd.grad(self._error(h, x, available).sum(), h)
                opt.step()
        out = h.new_zeros(*real.shape, self.config.latent_dim)
        out[real] = h.detach()
        return out

    def predict(self, h: torch.Tensor) -> torch.Tensor:
        """(B, S, L) -> <h, centre_k> (B, S, C), or the head's value (B, S, 1)."""
        return self.head(h) if self.head is not None else h @ self.centres.T

    # --- Method API ---------------------------------------------------------------------------
    def forward(self, batch: Batch) -> torch.Tensor:
        h = self.table_latents(batch) if self.training else self.fit_latents(batch)
        return self.predict(h)

    def stage_loss(self, batch: Batch, stage: Stage):
        h = self.table_latents(batch)
        recon = self.reconstruction_error(h, batch).sum()
        cls = self._hinge_classes(batch.labels)
        keep = batch.utt_mask & (cls >= 0)
        hinge = structured_hinge(h[keep], cls[keep], self.n_hinge_classes)
        loss = recon + self.config.lamb * hinge
        parts = {"recon": float(recon.detach()), "hinge": float(hinge.detach())}
        if self.head is not None:
            se = (self.head(h)[..., 0] - batch.labels.float()).pow(2)
            mse = torch.where(batch.utt_mask, se, 0.0).sum()
            loss = loss + mse
            parts["mse"] = float(mse.detach())
        return loss, parts
