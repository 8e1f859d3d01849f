"""Optimisation, selection and run settings shared by every method (the Trainer's config).

The method's own hyper-parameters and the presets that merge both live in
:mod:`hardymer.runs.config`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..data.standardize import CHOICES as STANDARDIZE_CHOICES
from ..metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS
from .tracking import check as check_trackers

PRECISIONS = ("float32", "bfloat16")
PROTOCOLS = {"val": "val", "paper": "paper", "test-best-epoch": "paper"}


@dataclass
class TrainConfig:
    """Optimisation, selection and run settings shared by every method.

    ``epochs`` has one entry per stage of the method (MoMKE: unimodal, mixing).
    ``protocol``: ``val`` selects the epoch with the best validation metric (default);
    ``paper`` (alias ``test-best-epoch``) selects the best epoch *on the test split*, as the
    MoMKE / HARDY-MER papers do — every result records which was used.
    """

    epochs: list[int] = field(default_factory=lambda: [100, 100])
    batch_size: int = 16          # sequences per batch
    lr: float = 1e-4
    weight_decay: float = 1e-5
    seed: int = 66
    protocol: str = "val"
    select_metric: str | None = None  # None: WA (classification) / F1 (regression)
    grad_clip: float | None = None
    val_fraction: float = 0.1     # of training sequences, carved when the data has no val split
    split_seed: int = 0           # fixes that carve; independent of ``seed`` so methods with
                                  # different training seeds still share the same folds
    eval_batch_size: int = 32
    device: str = "auto"          # auto = cuda when available, else cpu
    deterministic: bool = True
    folds_scheme: str = "auto"    # auto, session, split or kfold (protocol/splits.py)
    standardize: str = "auto"     # z-score features with the fold's training statistics;
                                  # auto: on for `hardymer extract` data, off for the papers'
                                  # feature sets (data/standardize.py)
    # --- ours, for speed; none changes what a run computes beyond float rounding ----------
    batch_utterances: int | None = None  # pack whole sequences into training batches of at
                                  # most this many utterances instead of `batch_size`
                                  # sequences (for utterance-level data, where a batch of 16
                                  # one-utterance sequences is 16 utterances); null: off
    fused_optimizer: bool = True  # torch's fused Adam kernel (one pass over the weights, ~4x
                                  # faster step on CPU; equal to float rounding); false: torch's
                                  # default per-parameter loop (the old path)
    checkpoint_every: int = 0     # write `last` every N epochs; 0 = auto: when the time since
                                  # the last write is >= 20x that write's cost (writes <= 5 % of
                                  # training). Always at the end of a stage and of the fit.
                                  # Resume is exact either way (replays from `last`).
    patience: int | None = None   # early stopping: end training after this many selection
                                  # epochs without improvement of the protocol's selection
                                  # metric (val under `val`, test under `paper`); null: off,
                                  # as in the papers' presets
    # --- ours, for speed, and it does change the numbers ---------------------------------
    precision: str = "float32"    # "bfloat16": each training step's forward pass (and loss)
                                  # under torch.autocast, so matrix products run in bfloat16
                                  # (the CPU's bf16 units; CUDA's tensor cores); weights,
                                  # optimizer state, gradients' accumulation, evaluation and
                                  # checkpoints stay float32. Off in every preset (the papers
                                  # train in float32); docs/experiments.md has its figures
    log: list[str] = field(default_factory=list)  # training curves: [tensorboard] writes
                                  # event files in every trainer folder (training/tracking.py);
                                  # not part of what a run computes, so it can be switched on
                                  # when resuming a run

    def check(self, task: str | None = None) -> None:
        """Raise ValueError naming ``train.KEY`` for a value that cannot run (a range, a
        choice, a device this machine lacks); ``task`` also checks ``select_metric``."""
        def bad(key, expected):
            return ValueError(f"train.{key}={getattr(self, key)!r}; expected {expected}")
        if not isinstance(self.epochs, list) or not all(
                isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in self.epochs):
            raise bad("epochs", "a list of epoch counts >= 0, one per stage")
        if sum(self.epochs) == 0:
            raise bad("epochs", "at least one stage with epochs > 0")
        for key in ("batch_size", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise bad(key, "an integer >= 1")
        if self.batch_utterances is not None and self.batch_utterances < 1:
            raise bad("batch_utterances", "null (batches of batch_size sequences) or an "
                      "utterance budget >= 1")
        if self.checkpoint_every < 0:
            raise bad("checkpoint_every", "0 (auto: writes <= 5 % of training time) or every "
                      "N >= 1 epochs")
        if self.patience is not None and self.patience < 1:
            raise bad("patience", "null (no early stopping) or a number of epochs >= 1")
        if not self.lr > 0:
            raise bad("lr", "a learning rate > 0")
        if not self.weight_decay >= 0:
            raise bad("weight_decay", "a value >= 0")
        if not 0 < self.val_fraction < 1:
            raise bad("val_fraction", "a fraction in (0, 1)")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise bad("grad_clip", "null (no clipping) or a norm > 0")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"one of {', '.join(PRECISIONS)} (bfloat16: autocast of "
                      "the training steps)")
        if self.protocol not in PROTOCOLS:
            raise bad("protocol", f"one of {', '.join(PROTOCOLS)}")
        if str(self.standardize).strip().lower() not in STANDARDIZE_CHOICES:
            raise bad("standardize", "auto, true or false")
        if self.folds_scheme not in FOLD_SCHEMES:
            raise bad("folds_scheme", f"one of {', '.join(FOLD_SCHEMES)}")
        names = {"classification": CLASSIFICATION_METRICS,
                 "regression": REGRESSION_METRICS}.get(task,
                                                       CLASSIFICATION_METRICS + REGRESSION_METRICS)
        if self.select_metric is not None and self.select_metric not in names:
            raise bad("select_metric", f"null (the task's default) or one of "
                      f"{', '.join(dict.fromkeys(names))}")
        check_trackers(self.log)
        _check_device(self.device)


FOLD_SCHEMES = ("auto", "session", "split", "kfold")


def _check_device(name: str) -> None:
    if name in ("auto", "cpu"):
        return
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"train.device={name!r}; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"train.device={name!r}, but torch sees no CUDA device on this "
                             "machine; use train.device=auto (or cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"train.device={name!r}; this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"train.device={name!r}, but MPS is not available here")
    elif device.type not in ("cuda", "mps"):
        raise ValueError(f"train.device={name!r}; expected auto, cpu, cuda or cuda:N")
