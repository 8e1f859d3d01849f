"""A run: one method on one data set, over folds × conditions, in one resumable folder.

Layout of a run folder::

    RUN/run.json                      config, data source, conditions, folds, versions
    RUN/fold<k>/_shared/<stage>/      condition-independent stages (MoMKE's stage 1), trained
                                      once per fold and reused by every condition
    RUN/fold<k>/<condition>/          last/best checkpoints, metrics.{jsonl,csv}, result.json
    RUN/results.{jsonl,csv,md,png}    one record per (fold, condition) and the summary table

Re-running the same command resumes: finished cells are read back, interrupted ones continue
from their last checkpoint.
"""
from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..data.dataset import MERDataset
from ..data.standardize import fold_inputs
from ..models.base import create_method, get_method_class
from ..protocol.conditions import Condition
from ..protocol.splits import Fold, make_folds
from ..fileio import atomic_write_json, atomic_write_text
from .checkpoint import checkpoint_exists
from .config import RunConfig
from .loaders import FoldData
from .trainer import Trainer


def condition_dirname(cond: Condition) -> str:
    return cond.name.replace(":", "-").replace("+", "_")


def versions() -> dict[str, str]:
    import sklearn
    return {"hardymer": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "sklearn": sklearn.__version__, "python": platform.python_version()}


def build_method(cfg: RunConfig, dataset: MERDataset):
    torch.manual_seed(cfg.train.seed)  # weight init is part of the seeded run
    return create_method(cfg.method, dims=dataset.dims, n_outputs=dataset.n_classes,
                         task=dataset.task, **cfg.model)


def cell_dir(out: Path | None, fold_index: int, cond: Condition) -> Path | None:
    """``RUN/fold<k>/<condition>/`` (None for an in-memory run)."""
    return out / f"fold{fold_index}" / condition_dirname(cond) if out is not None else None


def shared_dir(out: Path | None, fold_index: int, name: str) -> Path | None:
    """``RUN/fold<k>/_shared/<name>/``: condition-independent work of a fold."""
    return out / f"fold{fold_index}" / "_shared" / name if out is not None else None


def _finished(cell: Path | None) -> bool:
    return cell is not None and (cell / "result.json").is_file()


def prepare_fold(cfg: RunConfig, dataset: MERDataset, fold: Fold, out: Path | None,
                 progress: bool = True):
    """The method's per-fold preparation (HARDY-MER: fine-tuning, teacher), cached under
    ``RUN/fold<k>/_shared/<method>/``; None for methods that need none."""
    cls = get_method_class(cfg.method)
    workdir = shared_dir(out, fold.index, cfg.method)
    return cls.prepare_fold(cls.Config(**cfg.model), dataset, fold, cfg.train, workdir,
                            progress)


def run_cell(cfg: RunConfig, dataset: MERDataset, fold: Fold, cond: Condition, out: Path | None,
             progress: bool = True, context=None, prepared: bool = False) -> dict:
    """Train and evaluate one (fold, condition); returns its result record.

    A finished cell (``result.json`` present) is read back, not retrained. ``context`` is the
    fold's :func:`prepare_fold` result when the caller already has it (``prepared=True``).
    """
    cell = cell_dir(out, fold.index, cond)
    if _finished(cell):
        return json.loads((cell / "result.json").read_text())
    if not prepared:
        context = prepare_fold(cfg, dataset, fold, out, progress)
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
    if out is not None and any(s.epochs for s in prefix):
        shared = shared_dir(out, fold.index, "-".join(s.name for s in prefix))
        if _epochs_done(shared / "last") < sum(s.epochs for s in prefix):
            # (resumes by itself if an earlier attempt was interrupted)
            Trainer(cfg.train, shared, progress=progress).fit(method, data, stages=prefix,
                                                              final_eval=False)
            method = build_method(cfg, dataset)  # fresh object; weights come from init_from
        init_from = shared / "last"
    method.attach(context, data, cell)
    result = Trainer(cfg.train, cell, progress=progress).fit(method, data, stages,
                                                              init_from=init_from)
    record = {
        "method": cfg.method, "condition": cond.name, "fold": fold.index,
        "fold_name": fold.name, "seed": cfg.train.seed, "protocol": cfg.train.protocol,
        "selected_epoch": result.selected_epoch, "seconds": round(result.seconds, 2),
        **{f"val_{k}": v for k, v in result.val.items()},
        **{f"test_{k}": v for k, v in result.test.items()},
        "n_train": int(sum(len(dataset.sequences[i]) for i in fold.train)),
        "n_test": int(sum(len(dataset.sequences[i]) for i in fold.test)),
    }
    if cell is not None:
        atomic_write_json(cell / "result.json", record)
    return record


def _epochs_done(stem: Path) -> int:
    return json.loads(stem.with_suffix(".json").read_text())["epoch"] \
        if checkpoint_exists(stem) else 0


def prepare_run_dir(out: Path, cfg: RunConfig, data_source: str, dataset: MERDataset,
                    conditions: list[Condition], fold_ids: list[int]) -> None:
    """Create or check ``run.json``; a different config in the same folder is an error."""
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "run.json"
    fingerprint = data_fingerprint(dataset)
    want = {"config": cfg.to_dict(), "data": data_source}
    if meta_path.is_file():
        have = json.loads(meta_path.read_text())
        if {"config": _with_defaults(have["config"]), "data": have["data"]} != want:
            raise ValueError(f"{out} holds a run with a different configuration or data; "
                             "choose another --out (or delete the folder) to start afresh")
        if have.get("fingerprint", fingerprint) != fingerprint:
            raise ValueError(f"the data at {data_source!r} changed since {out} was started "
                             "(utterances, labels, availability or extractors); its finished "
                             "cells were trained on the old data: choose another --out")
        conds = sorted(set(have["conditions"]) | {c.name for c in conditions})
        folds = sorted(set(have["folds"]) | set(fold_ids))
    else:
        conds, folds = [c.name for c in conditions], fold_ids
    atomic_write_json(meta_path, {**want, "conditions": conds, "folds": folds,
                                  "dataset": dataset.summary(), "fingerprint": fingerprint,
                                  "task": dataset.task,
                                  "modalities": list(dataset.modalities),
                                  "versions": versions()})


def data_fingerprint(dataset: MERDataset) -> str:
    """sha1 of what identifies a data set's content cheaply: utterance ids and order, labels,
    availability, feature shapes and first/last rows, and the extractors that made it."""
    import hashlib
    h = hashlib.sha1()
    h.update("\n".join(map(str, dataset.utterances["utterance_id"])).encode())
    h.update(np.ascontiguousarray(dataset.labels).tobytes())
    h.update(np.ascontiguousarray(dataset.available).tobytes())
    for m in dataset.modalities:
        x = dataset.features[m]
        h.update(f"{m}{x.shape}".encode())
        h.update(np.ascontiguousarray(x[:64], dtype=np.float32).tobytes())
        h.update(np.ascontiguousarray(x[-64:], dtype=np.float32).tobytes())
    prov = (dataset.meta.get("extraction") or {}).get("extractors")
    h.update(json.dumps(prov, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _with_defaults(config: dict) -> dict:
    """A stored config with fields added since it was written set to their defaults, so a run
    made by an older version still resumes when nothing it set has changed."""
    from dataclasses import asdict, fields
    from .config import TrainConfig, upgrade_train
    cls = get_method_class(config["method"])
    model = {f.name: getattr(cls.Config(), f.name) for f in fields(cls.Config)}
    return {**config, "model": {**model, **config["model"]},
            "train": {**asdict(TrainConfig()), **upgrade_train(config["train"])}}


def run_experiment(cfg: RunConfig, dataset: MERDataset, conditions: list[Condition],
                   fold_ids: list[int] | None, out: Path | None, data_source: str = "",
                   progress: bool = True, n_folds: int = 5) -> list[dict]:
    """Every (fold, condition) cell of a run; returns the result records."""
    folds = make_folds(dataset, n_folds=n_folds, val_fraction=cfg.train.val_fraction,
                       seed=cfg.train.split_seed)
    ids = list(range(len(folds))) if fold_ids is None else fold_ids
    bad = [k for k in ids if not 0 <= k < len(folds)]
    if bad:
        raise ValueError(f"fold {bad[0]} does not exist; this data set has {len(folds)} fold(s) "
                         f"(0..{len(folds) - 1}): {', '.join(f.name for f in folds)}")
    if out is not None:
        prepare_run_dir(out, cfg, data_source, dataset, conditions, ids)
    records = []
    for k in ids:
        fold_ds, _ = fold_inputs(cfg.train.standardize, dataset, folds[k].train)
        context, prepared = None, False
        for cond in conditions:
            if not prepared and not _finished(cell_dir(out, k, cond)):
                context, prepared = prepare_fold(cfg, fold_ds, folds[k], out, progress), True
            records.append(run_cell(cfg, fold_ds, folds[k], cond, out, progress, context,
                                    prepared))
            if out is not None:
                _write_records(out, records)
    return records


def _write_records(out: Path, records: list[dict]) -> None:
    # Merge with records already on disk (other conditions or folds run earlier, or by another
    # sweep worker, into the same folder); the lock makes the read-merge-write one step.
    import fcntl
    with open(out / ".results.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _merge_records(out, records)


def _merge_records(out: Path, records: list[dict]) -> None:
    path = out / "results.jsonl"
    old = [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []
    key = lambda r: (r["fold"], r["condition"])  # noqa: E731
    merged = {key(r): r for r in old}
    merged.update({key(r): r for r in records})
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in
                                    sorted(merged.values(), key=lambda r: (r["fold"],
                                                                           r["condition"]))))


def read_records(out: Path) -> list[dict]:
    path = Path(out) / "results.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results yet — is {out} a run folder made by "
                                "`hardymer train`?")
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]

