"""A run: one method on one data set, over folds × conditions, in one resumable folder.

The folder's layout is :class:`~hardymer.runs.layout.Run`'s. Re-running the same command
resumes: finished cells are read back, interrupted ones continue from their last checkpoint.

Under torchrun every rank runs this same code with its :class:`Distributed`: rank 0 alone holds
the folder's lock and writes (``run.json``, results, the fold's preparation, which the others
then read back from its cache), the trainers split each batch between the ranks.
"""
from __future__ import annotations

import shutil
from contextlib import nullcontext
from pathlib import Path

import torch

from ..data.dataset import MERDataset
from ..data.standardize import fold_inputs, is_mapped, standardize_wanted
from ..models import create_method, get_method_class
from ..protocol.conditions import Condition
from ..protocol.splits import Fold, make_folds
from ..training.checkpoint import checkpoint_epoch
from ..training.distributed import SINGLE, Distributed
from ..training.loaders import FoldData
from ..training.trainer import Trainer
from .config import RunConfig
from .layout import Run


def build_method(cfg: RunConfig, dataset: MERDataset):
    torch.manual_seed(cfg.train.seed)  # weight init is part of the seeded run
    return create_method(cfg.method, dims=dataset.dims, n_outputs=dataset.n_classes,
                         task=dataset.task, **cfg.model)


def _as_run(out: Run | Path | str | None) -> Run | None:
    return out if out is None or isinstance(out, Run) else Run(out)


def prepare_fold(cfg: RunConfig, dataset: MERDataset, fold: Fold, out: Run | Path | None,
                 progress: bool = True, dist: Distributed = SINGLE):
    """The method's per-fold preparation (HARDY-MER: fine-tuning, teacher), cached under
    ``RUN/fold<k>/_shared/<method>/``; None for methods that need none. Distributed: rank 0
    prepares (in one process) while the others wait, then they read its cache back."""
    run = _as_run(out)
    cls = get_method_class(cfg.method)
    workdir = run.shared(fold.index, cfg.method) if run is not None else None
    if dist.active and run is None:
        raise ValueError("a distributed run needs a run folder (--out): the ranks share the "
                         "fold's preparation through it")
    with dist.main_first():
        return cls.prepare_fold(cls.Config(**cfg.model), dataset, fold, cfg.train, workdir,
                                progress and dist.is_main)


def run_cell(cfg: RunConfig, dataset: MERDataset, fold: Fold, cond: Condition,
             out: Run | Path | None, progress: bool = True, context=None,
             prepared: bool = False, dist: Distributed = SINGLE) -> dict:
    """Train and evaluate one (fold, condition); returns its result record.

    A finished cell (``result.json`` present) is read back, not retrained. ``context`` is the
    fold's :func:`prepare_fold` result when the caller already has it (``prepared=True``).
    """
    run = _as_run(out)
    cell = run.cell(fold.index, cond) if run is not None else None
    if run is not None and (done := run.result(fold.index, cond)) is not None:
        return done
    if not prepared:
        context = prepare_fold(cfg, dataset, fold, run, progress, dist)
    if context is not None:
        dataset = context.dataset
    method = build_method(cfg, dataset)
    data = FoldData(dataset, fold, cond, seed=cfg.train.seed)
    stages = method.stages(list(cfg.train.epochs))
    init_from = None
    # Stages before the first conditioned one do not depend on the condition: train them once
    # per fold and start every condition from there (same RNG and optimizer state).
    prefix = []
    for s in stages:
        if s.apply_condition or s.select:
            break
        prefix.append(s)
    if run is not None and any(s.epochs for s in prefix):
        shared = run.shared(fold.index, "-".join(s.name for s in prefix))
        if checkpoint_epoch(shared / "last") < sum(s.epochs for s in prefix):
            # (resumes by itself if an earlier attempt was interrupted)
            Trainer(cfg.train, shared, dist=dist, progress=progress).fit(
                method, data, stages=prefix, final_eval=False)
            method = build_method(cfg, dataset)  # fresh object; weights come from init_from
        init_from = shared / "last"
    method.attach(context, data, cell if dist.is_main else None)   # only rank 0 caches
    result = Trainer(cfg.train, cell, dist=dist, progress=progress).fit(
        method, data, stages, init_from=init_from)
    record = {
        "method": cfg.method, "condition": cond.name, "fold": fold.index,
        "fold_name": fold.name, "fold_scheme": fold.scheme, "seed": cfg.train.seed,
        "protocol": cfg.train.protocol,
        **type(method).record_fields(method.config),
        "selected_epoch": result.selected_epoch, "seconds": round(result.seconds, 2),
        **{f"val_{k}": v for k, v in result.val.items()},
        **{f"test_{k}": v for k, v in result.test.items()},
        "n_train": int(sum(len(dataset.sequences[i]) for i in fold.train)),
        "n_test": int(sum(len(dataset.sequences[i]) for i in fold.test)),
    }
    if run is not None and dist.is_main:
        run.write_result(fold.index, cond, record)
    return record


def check_run(cfg: RunConfig, dataset: MERDataset, out: Run | Path | None = None,
              data_source: str = "") -> None:
    """Everything a run can check before it writes anything: the config against the data's
    task, and ``out`` as a place for this run (:meth:`Run.check`). Raises ValueError."""
    cfg.train.check(dataset.task)
    cls = get_method_class(cfg.method)
    cls.check_config(cls.Config(**cfg.model))
    run = _as_run(out)
    if run is not None:
        run.check(cfg, data_source, dataset)


def checked_fold_ids(folds: list[Fold], fold_ids: list[int] | None) -> list[int]:
    """``fold_ids`` (None: every fold), each checked to exist; ValueError naming the folds."""
    ids = list(range(len(folds))) if fold_ids is None else list(fold_ids)
    bad = [k for k in ids if not 0 <= k < len(folds)]
    if bad:
        raise ValueError(f"fold {bad[0]} does not exist; this data set has {len(folds)} fold(s) "
                         f"(0..{len(folds) - 1}): {', '.join(f.name for f in folds)}")
    return ids


def run_experiment(cfg: RunConfig, dataset: MERDataset, conditions: list[Condition],
                   fold_ids: list[int] | None, out: Run | Path | None, data_source: str = "",
                   progress: bool = True, n_folds: int = 5, lock: bool = True,
                   dist: Distributed | None = None) -> list[dict]:
    """Every (fold, condition) cell of a run; returns the result records.

    Everything is checked (:func:`check_run`, the folds) before the first file is written;
    the run folder is then held (:meth:`Run.lock`, unless ``lock=False``: a sweep holds its
    own folder) for the whole run, so two commands on one folder take turns. ``dist``: the
    data-parallel group (default: the one torchrun describes, or one process).
    """
    run = _as_run(out)
    dist = Distributed.from_env(cfg.train.device) if dist is None else dist
    check_run(cfg, dataset, run, data_source)
    folds = make_folds(dataset, n_folds=n_folds, val_fraction=cfg.train.val_fraction,
                       seed=cfg.train.split_seed, scheme=cfg.train.folds_scheme)
    ids = checked_fold_ids(folds, fold_ids)
    if run is None:
        return _cells(cfg, dataset, folds, ids, conditions, None, progress, dist)
    with run.lock() if lock and dist.is_main else nullcontext():
        if dist.is_main:
            run.prepare(cfg, data_source, dataset, conditions, ids, folds[0].scheme)
        dist.barrier()
        return _cells(cfg, dataset, folds, ids, conditions, run, progress, dist)


def _cells(cfg, dataset, folds, ids, conditions, run, progress, dist=SINGLE) -> list[dict]:
    records = []
    for k in ids:
        pending = run is None or any(run.result(k, c) is None for c in conditions)
        # (a finished cell is read back: its fold needs no inputs)
        fold_ds, scratch = _fold_inputs(cfg, dataset, folds[k], run, dist) if pending \
            else (dataset, None)
        context, prepared = None, False
        for cond in conditions:
            finished = run is not None and run.result(k, cond) is not None
            if not prepared and not finished:
                context = prepare_fold(cfg, fold_ds, folds[k], run, progress, dist)
                prepared = True
            rec = run_cell(cfg, fold_ds, folds[k], cond, run, progress, context, prepared,
                           dist)
            records.append(rec)
            if run is not None and dist.is_main:  # a cell read back keeps its row
                run.add_records([rec], dataset, replace=not finished)
        if scratch is not None:
            dist.barrier()   # every rank is done reading the maps
            if dist.is_main:   # the fold's cells are done: N x d of disk back
                shutil.rmtree(scratch, ignore_errors=True)
    return records


def _fold_inputs(cfg, dataset, fold, run, dist) -> tuple[MERDataset, Path | None]:
    """A fold's (standardised) inputs, and the scratch folder holding them, if any: memory-
    mapped data are standardised into ``RUN/fold<k>/_shared/standardized/`` (by rank 0; the
    others map its files) so that nothing of size N × d is held in memory."""
    scratch = run.shared(fold.index, "standardized") if run is not None and \
        is_mapped(dataset) and standardize_wanted(cfg.train.standardize, dataset) else None
    if scratch is None:
        return fold_inputs(cfg.train.standardize, dataset, fold.train)[0], None
    with dist.main_first():
        return fold_inputs(cfg.train.standardize, dataset, fold.train, scratch)[0], scratch


def schedule(cfg: RunConfig, dataset: MERDataset) -> list[tuple[str, int, str]]:
    """Every stage one fold of this run trains, hidden ones included, as ``(name, epochs,
    how often)``: the method's preparation (once per fold), the trainer's stages before the
    first conditioned one (once per fold, shared by the conditions), the rest (per
    condition)."""
    cls = get_method_class(cfg.method)
    rows = [(name, e, "per fold")
            for name, e in cls.preparation(cls.Config(**cfg.model), dataset.modalities)]
    method = create_method(cfg.method, dims=dataset.dims, n_outputs=dataset.n_classes,
                           task=dataset.task, **cfg.model)
    shared = True
    for s in method.stages(list(cfg.train.epochs)):
        shared = shared and not (s.apply_condition or s.select)
        rows.append((s.name, s.epochs, "per fold, shared by conditions" if shared
                     else "per condition"))
    return rows


def schedule_text(cfg: RunConfig, dataset: MERDataset, n_folds: int, n_conditions: int) -> str:
    """The schedule as ``train`` and ``sweep`` print it before they start."""
    rows = schedule(cfg, dataset)
    per_fold = sum(e for _, e, how in rows if how != "per condition")
    per_cond = sum(e for _, e, how in rows if how == "per condition")
    total = n_folds * (per_fold + n_conditions * per_cond)
    return ("schedule: " + "; ".join(f"{n} {_epochs(e)} ({how})" for n, e, how in rows)
            + f"\n  = {_epochs(total)} for {n_folds} fold(s) x {n_conditions} condition(s) "
            "(--set budget.scale=0.1 shortens every stage at once)")


def _epochs(n: int) -> str:
    return f"{n} epoch{'' if n == 1 else 's'}"
