"""Re-evaluate a finished run's selected checkpoints, under its own or another condition."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..data import open_data
from ..data.standardize import fold_inputs
from ..data.validate import DataError
from ..models import get_method_class
from ..protocol.conditions import parse_condition
from ..protocol.splits import make_folds
from ..training.checkpoint import CheckpointError, checkpoint_exists, load_checkpoint
from ..training.loaders import FoldData
from ..training.trainer import evaluate, resolve_device
from .config import RunConfig
from .experiment import build_method
from .layout import Run


SPLITS = ("test", "val", "train")


class EvaluationError(ValueError):
    """The run folder or the request does not fit (message says what to do)."""


def evaluate_run(run: Path, condition: str | None = None, trained_on: str | None = None,
                 split: str = "test", opener: Callable | None = None) -> dict:
    """Evaluate every fold's selected model of a run.

    Parameters
    ----------
    run : run folder (has ``run.json``)
    condition : evaluate under this condition (default: each model's training condition)
    trained_on : which trained condition's models to load (default: ``condition`` when the run
        has it, else the run's only one)
    split : "test", "val" or "train"
    opener : callable(source) -> MERDataset, to reopen the run's data

    Returns
    -------
    dict with the mean of each metric over folds under its name (``WA``, ``UA``, ``F1`` or
    ``ACC``, ``F1``, ``MAE``, ``Corr``), ``metrics`` (their names), ``per_fold`` and provenance.
    """
    try:
        run = Run.open(run)
    except FileNotFoundError as err:
        raise EvaluationError(str(err)) from None
    if split not in SPLITS:
        raise EvaluationError(f"--split {split!r}; expected one of {', '.join(SPLITS)}")
    cfg = run.config
    dataset = (opener or open_data)(run.data)
    changes = run.data_changes(dataset)
    if changes:
        raise EvaluationError(run.data_changed_message(changes, "trained") + "; its models "
                              "would be scored on other data: restore the data, or re-train")
    trained = run.conditions
    try:
        eval_cond = parse_condition(condition, dataset.modalities) if condition else None
        if trained_on:
            source = parse_condition(trained_on, dataset.modalities).name
        elif eval_cond is not None and eval_cond.name in trained:
            source = eval_cond.name
        elif eval_cond is None:
            source = None
        elif len(trained) == 1:
            source = trained[0]
        else:
            raise EvaluationError(f"the run trained conditions {trained}; say which models to "
                                  f"evaluate under {eval_cond.name} with --trained-on")
    except DataError as err:
        raise EvaluationError(str(err)) from err
    if source is not None and source not in trained:
        raise EvaluationError(f"no models trained under {source!r} in {run.path}; trained: "
                              f"{trained}")
    sources = [source] if source else trained
    folds = make_folds(dataset, val_fraction=cfg.train.val_fraction,
                       seed=cfg.train.split_seed, scheme=cfg.train.folds_scheme)
    device = resolve_device(cfg.train.device)
    per_fold = []
    for k in run.folds:
        fold_ds = None      # the fold's test-time data: built once, for its first model
        for src in sources:
            src_cond = parse_condition(src, dataset.modalities)
            stem = run.checkpoint(k, src_cond)
            if not checkpoint_exists(stem):
                raise EvaluationError(f"{stem}.safetensors missing: fold {k} under {src} has "
                                      "not finished (re-run the train command to resume)")
            if fold_ds is None:
                fold_ds = _test_time_data(cfg, dataset, folds[k], run)
            method = build_method(cfg, fold_ds)
            try:
                load_checkpoint(stem, method)
            except CheckpointError as err:
                raise EvaluationError(str(err)) from None
            method.to(device)
            cond = eval_cond or src_cond
            data = FoldData(fold_ds, folds[k], cond, seed=cfg.train.seed)
            metrics = evaluate(method, data.eval_loader(split, cfg.train.eval_batch_size), device)
            per_fold.append({"fold": k, "trained_on": src, "condition": cond.name,
                             "metrics": metrics})
    names = list(per_fold[0]["metrics"]) if per_fold else []
    out = {name: float(np.mean([c["metrics"][name] for c in per_fold])) for name in names}
    out.update({"metrics": names, "split": split, "protocol": cfg.train.protocol,
                "method": cfg.method, "per_fold": per_fold})
    return out


def _test_time_data(cfg: RunConfig, dataset, fold, run: Run):
    """The data the fold's models read at test time (standardised when the run was; HARDY-MER:
    its fine-tuned features)."""
    dataset, _ = fold_inputs(cfg.train.standardize, dataset, fold.train)
    cls = get_method_class(cfg.method)
    workdir = run.fold_dir(fold.index)
    try:
        return cls.test_time_dataset(cls.Config(**cfg.model), dataset, workdir)
    except FileNotFoundError as err:
        raise EvaluationError(str(err)) from err
