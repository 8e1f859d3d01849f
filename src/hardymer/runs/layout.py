"""The run folder, as one class: every path into a run is asked of :class:`Run`.

Layout::

    RUN/run.json                    config, data source, conditions, folds, data fingerprint,
                                    versions
    RUN/fold<k>/_shared/<name>/     condition-independent work of a fold: stages trained once
                                    and shared by every condition (MoMKE's stage 1), and the
                                    method's per-fold preparation (``_shared/<method>/``:
                                    HARDY-MER's fine-tuning and teacher)
    RUN/fold<k>/<condition>/        the trainer's checkpoints (last/best) and metrics, the
                                    method's own files (HARDY-MER: curriculum/), result.json
    RUN/results.sqlite              one row per finished (fold, condition), the results store
                                    schema of sweeps (:mod:`hardymer.runs.store`)
    RUN/results.{csv,md,png}        the summary table

Ownership: this class hands out every folder above; inside a cell or a ``_shared`` folder the
trainer owns its checkpoint files (``last``/``best``, ``metrics.*``) and the method its own
(HARDY-MER's ``curriculum/``, ``finetune/``, ``teacher/``; read back only by the method's
hooks). Run folders written before ``results.sqlite`` kept their records in
``results.jsonl``; they are read as they are, and moved into the store on the next write.
"""
from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, fields
from functools import cached_property
from pathlib import Path

import numpy as np
import sklearn
import torch

from ..data.dataset import MERDataset
from ..data.fingerprint import changed_parts, combined, content_digests
from ..fileio import atomic_write_json, check_folder_path, folder_lock
from ..models import get_method_class
from ..protocol.conditions import Condition
from ..training.config import TrainConfig
from ..version import __version__
from .config import RunConfig, upgrade_model, upgrade_train
from .store import ResultsStore, results_row


def condition_dirname(cond: Condition | str) -> str:
    name = cond.name if isinstance(cond, Condition) else str(cond)
    return name.replace(":", "-").replace("+", "_")


def versions() -> dict[str, str]:
    return {"hardymer": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "sklearn": sklearn.__version__, "python": platform.python_version()}


def legacy_fingerprint(dataset: MERDataset) -> str:
    """The fingerprint run folders stored before every byte was hashed (sha1 of utterance
    ids, labels, availability, feature shapes, first/last 64 rows and extractors): what an
    old ``run.json`` is checked against."""
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


def source_id(data: str) -> str:
    """How a run records its data: ``synth:…`` as given, a folder as its absolute path (run
    folders must not depend on the working directory)."""
    return data if str(data).startswith("synth:") else str(Path(data).resolve())


# What each command's folder is known by, for refusing another command's folder as --out.
FOLDER_MARKS = {"run.json": "a run folder (made by `hardymer train`)",
                "sweep.json": "a sweep folder (made by `hardymer sweep`)",
                "dataset.json": "a data set folder"}


def check_out_folder(path: Path, own: str, kind: str) -> None:
    """ValueError unless ``path`` can be (or is) a folder of the command whose marker file is
    ``own`` (``run.json``, ``sweep.json``): no file in the way, no other command's folder."""
    check_folder_path(path)
    for name, what in FOLDER_MARKS.items():
        if name != own and (Path(path) / name).is_file():
            raise ValueError(f"--out {path} is {what}; a {kind} needs a folder of its own: "
                             "choose another --out")


def dataset_meta(dataset: MERDataset) -> dict:
    """The data set's columns of a results row."""
    return {"dataset": dataset.name, "task": dataset.task, "family": dataset.family,
            "n_classes": dataset.n_classes, "generated": int(bool(dataset.meta.get("generator"))),
            "n_dropped": int(dataset.meta.get("dropped_no_modality", 0))}


class Run:
    """A run folder (it need not exist yet: :meth:`prepare` creates it).

    Parameters
    ----------
    path : the folder given as ``--out`` to ``hardymer train`` (or a sweep's run folder)
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # --- run.json -----------------------------------------------------------------------
    @property
    def meta_path(self) -> Path:
        return self.path / "run.json"

    def exists(self) -> bool:
        return self.meta_path.is_file()

    @classmethod
    def open(cls, path: str | Path) -> "Run":
        """An existing run; FileNotFoundError (saying what to pass) when it has no run.json."""
        run = cls(path)
        if not run.exists():
            raise FileNotFoundError(f"{run.meta_path} not found: pass a folder made by "
                                    "`hardymer train`")
        return run

    @cached_property
    def meta(self) -> dict:
        """run.json as written (raises FileNotFoundError when the folder has none)."""
        return json.loads(self.meta_path.read_text())

    @property
    def config(self) -> RunConfig:
        return RunConfig.from_dict(self.meta["config"])

    @property
    def method(self) -> str:
        return self.meta["config"]["method"]

    @property
    def data(self) -> str:
        return self.meta["data"]

    @property
    def conditions(self) -> list[str]:
        return list(self.meta["conditions"])

    @property
    def folds(self) -> list[int]:
        return list(self.meta["folds"])

    def data_changes(self, dataset: MERDataset) -> list[str]:
        """The parts of ``dataset`` that differ from the data the run was trained on (file
        names for a generic folder, see :func:`~hardymer.data.fingerprint.content_digests`);
        empty when it is the same data. A run folder from before per-part digests is
        compared as a whole (``["data"]`` when it differs)."""
        return _changes(self.meta, dataset)

    def data_matches(self, dataset: MERDataset) -> bool:
        """Whether ``dataset`` is the data the run was trained on, byte for byte."""
        return not self.data_changes(dataset)

    def data_changed_message(self, changes: list[str], what: str) -> str:
        """"the data at … changed since …: features/a.npy differs" for refusals."""
        return (f"the data at {self.data!r} changed since {self.path} was {what}: "
                f"{', '.join(changes)} differ{'s' if len(changes) == 1 else ''} from the "
                "data the run was trained on")

    def lock(self, notify=None):
        """Hold ``RUN/.lock`` for a command (:func:`hardymer.fileio.folder_lock`): one writer
        per run folder; a second command waits, told who holds it."""
        return folder_lock(self.path, notify=notify)

    def check(self, cfg: RunConfig, data_source: str, dataset: MERDataset,
              digests: dict | None = None) -> None:
        """ValueError unless this folder can take (or resume) a run of ``cfg`` on
        ``dataset``: a new folder, or one whose ``run.json`` has the same config and data
        source and whose data have not changed since. Writes nothing."""
        check_out_folder(self.path, "run.json", "run")
        if not self.exists():
            return
        have = json.loads(self.meta_path.read_text())
        if {"config": _computed(_with_defaults(have["config"])), "data": have["data"]} != \
                {"config": _computed(cfg.to_dict()), "data": data_source}:
            raise ValueError(f"{self.path} holds a run with a different configuration or "
                             "data; choose another --out (or delete the folder) to start "
                             "afresh")
        changes = _changes(have, dataset, digests)
        if changes:
            raise ValueError(self.data_changed_message(changes, "started") + "; its "
                             "finished cells were trained on the old data: choose another "
                             "--out, or restore the data")

    def prepare(self, cfg: RunConfig, data_source: str, dataset: MERDataset,
                conditions: list[Condition], fold_ids: list[int],
                fold_scheme: str | None = None) -> None:
        """Create or check ``run.json``; a different config or changed data in the same
        folder is an error."""
        digests = content_digests(dataset)
        want = {"config": cfg.to_dict(), "data": data_source}
        if self.exists():
            self.check(cfg, data_source, dataset, digests)
            have = json.loads(self.meta_path.read_text())
            conds = sorted(set(have["conditions"]) | {c.name for c in conditions})
            folds = sorted(set(have["folds"]) | set(fold_ids))
        else:
            conds, folds = [c.name for c in conditions], fold_ids
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.meta_path, {**want, "conditions": conds, "folds": folds,
                                           "dataset": dataset.summary(),
                                           "fingerprint": combined(digests),
                                           "data_digests": digests, "task": dataset.task,
                                           "modalities": list(dataset.modalities),
                                           **({"fold_scheme": fold_scheme} if fold_scheme
                                              else {}),
                                           "versions": versions()})
        self.__dict__.pop("meta", None)

    # --- folders --------------------------------------------------------------------------
    def cell(self, fold: int, condition: Condition | str) -> Path:
        """``RUN/fold<k>/<condition>/``: one (fold, condition)'s model and results."""
        return self.path / f"fold{fold}" / condition_dirname(condition)

    def shared(self, fold: int, name: str) -> Path:
        """``RUN/fold<k>/_shared/<name>/``: condition-independent work of a fold."""
        return self.path / f"fold{fold}" / "_shared" / name

    def fold_dir(self, fold: int) -> Path:
        """The method's per-fold preparation folder (``prepare_fold``'s workdir)."""
        return self.shared(fold, self.method)

    def table_paths(self) -> dict[str, Path]:
        """The run's summary table files: ``results.csv``, ``results.md``, ``results.png``."""
        return {k: self.path / f"results.{k}" for k in ("csv", "md", "png")}

    def checkpoint(self, fold: int, condition: Condition | str, which: str = "best") -> Path:
        """Stem of a cell's checkpoint (``best``: the selected model; ``last``)."""
        return self.cell(fold, condition) / which

    # --- results --------------------------------------------------------------------------
    def result(self, fold: int, condition: Condition | str) -> dict | None:
        """A finished cell's result record, None while it is not finished."""
        path = self.cell(fold, condition) / "result.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def write_result(self, fold: int, condition: Condition | str, record: dict) -> None:
        atomic_write_json(self.cell(fold, condition) / "result.json", record)

    @property
    def store(self) -> ResultsStore:
        return ResultsStore(self.path / "results.sqlite")

    def add_records(self, records: list[dict], dataset: MERDataset,
                    replace: bool = True) -> None:
        """Put finished cells' records into the run's results store, in one transaction (so
        concurrent sweep workers on one run folder need no lock). ``replace=False`` keeps a
        cell's row when it is already there (a cell read back on resume). Records of an old
        folder's ``results.jsonl`` go in with them, and the file goes once they are in."""
        meta = dataset_meta(dataset)
        legacy = self._legacy_records()
        rows = [results_row(r, variant=r["method"], method=r["method"], data=self.data,
                            config=self.meta["config"], meta=meta,
                            versions=self.meta.get("versions", {}), run_dir=str(self.path))
                for r in legacy + list(records)]
        store = self.store
        store.add_many(rows[:len(legacy)], replace=False)
        store.add_many(rows[len(legacy):], replace=replace)
        if legacy:
            (self.path / "results.jsonl").unlink(missing_ok=True)

    def records(self) -> list[dict]:
        """One record per finished (fold, condition): :func:`run_cell`'s fields, plus the
        store's (``variant``, ``data``, ``config`` and ``versions`` as JSON text, ``run_dir``,
        ``finished_at``, ``base_method``); metrics a cell lacks are left out. Records still in
        an old folder's ``results.jsonl`` are included."""
        legacy = self._legacy_records()
        have = self.store.records() if (self.path / "results.sqlite").is_file() else []
        if not have and not legacy and not (self.path / "results.jsonl").is_file():
            raise FileNotFoundError(f"{self.path / 'results.sqlite'}: no results yet — is "
                                    f"{self.path} a run folder made by `hardymer train`?")
        seen = {(r["fold"], r["condition"]) for r in have}
        return have + [r for r in legacy if (r["fold"], r["condition"]) not in seen]

    def _legacy_records(self) -> list[dict]:
        path = self.path / "results.jsonl"
        if not path.is_file():
            return []
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]



def _changes(meta: dict, dataset: MERDataset, digests: dict | None = None) -> list[str]:
    if meta.get("dataset") and meta["dataset"] != dataset.summary():
        changed = ["the data set's sizes"]
    else:
        changed = []
    if "data_digests" in meta:
        now = digests if digests is not None else content_digests(dataset)
        return changed + changed_parts(meta["data_digests"], now)
    if "fingerprint" in meta and meta["fingerprint"] != legacy_fingerprint(dataset):
        return changed + ["the data"]
    return changed


def _computed(config: dict) -> dict:
    """A config without what does not change the results (``train.log``, the curves
    written), so that switching it on for a started run resumes that run."""
    return {**config, "train": {k: v for k, v in config["train"].items() if k != "log"}}


def _with_defaults(config: dict) -> dict:
    """A stored config with fields added since it was written set to their defaults, so a run
    made by an older version still resumes when nothing it set has changed."""
    cls = get_method_class(config["method"])
    model = {f.name: getattr(cls.Config(), f.name) for f in fields(cls.Config)}
    return {**config, "model": {**model, **upgrade_model(config["method"], config["model"])},
            "train": {**asdict(TrainConfig()), **upgrade_train(config["train"])}}
