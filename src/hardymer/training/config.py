"""Optimisation, selection and run settings shared by every method (the Trainer's config).

The method's own hyper-parameters and the presets that merge both live in
:mod:`hardymer.runs.config`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

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
    standardize: str = "auto"     # z-score features with the fold's training statistics;
                                  # auto: on for `hardymer extract` data, off for the papers'
                                  # feature sets (data/standardize.py)
