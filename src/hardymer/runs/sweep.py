"""Sweeps: variants × conditions × folds × seeds on one data set, resumable, optionally parallel.

A *variant* is a registered method with overrides (``hardymer:no-h-dir`` is HARDY-MER with an
ablation; a config file can name any ``--set`` list). The sweep folder holds::

    SWEEP/sweep.json                 the grid (a different grid in the same folder is an error)
    SWEEP/results.sqlite             one row per finished cell (hardymer.runs.store)
    SWEEP/runs/<variant>/seed<k>/    ordinary run folders (hardymer train layout)

Work is split into *units* of (variant, seed, fold) — all conditions of a fold share the fold's
preparation and condition-independent stages. A unit whose cells are all in the store is
skipped; otherwise it runs through :func:`run_experiment`, which reads finished cells back and
resumes interrupted ones from their last checkpoint, so a killed sweep loses at most the epoch
in progress. Units run in this process, in ``workers`` spawned processes (each with
``cpu_count // workers`` torch threads), or as Ray tasks (``backend="ray"``: a local Ray, or a
cluster at ``address``; each task asks for ``cpus_per_cell`` CPUs and ``gpus_per_cell`` GPUs
and uses that many torch threads); only the parent (the driver) writes the store, so a killed
driver loses no finished cell and the same command resumes.
"""
from __future__ import annotations

import difflib
import json
import os
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from tqdm.auto import tqdm

from ..data import open_data
from ..data.validate import DataWarning
from ..fileio import atomic_write_json, folder_lock
from ..models import METHODS, get_method_class
from ..protocol.conditions import all_fixed_conditions, parse_condition
from ..protocol.splits import make_folds
from ..training import tracking as trackers
from ..training.distributed import launched
from .config import load_run_config
from .experiment import check_run, checked_fold_ids, run_experiment, schedule_text
from .layout import Run, check_out_folder, dataset_meta, source_id, versions
from .store import ResultsStore, results_row

TEXT_HINT = ("methods as NAME or NAME:ABLATION (hardymer:no-h-dir), e.g. "
             "--methods momke,zero-fill,hardymer:no-h")


# Settings a sweep owns: a --set of them would be overwritten by the grid's value.
GRID_KEYS = {"train.protocol": "--protocol (or protocol: in the grid file)",
             "train.seed": "--seeds (or seeds: in the grid file)"}


@dataclass
class Variant:
    """A registered method plus overrides, shown in tables under ``name``."""

    name: str
    method: str
    set: list[str] = field(default_factory=list)


@dataclass
class SweepSpec:
    """The grid. Field names are those of the YAML file ``hardymer sweep --config`` reads."""

    data: str = ""
    methods: list[Variant] = field(default_factory=list)
    conditions: list[str] = field(default_factory=lambda: ["all"])
    folds: str = "all"                 # "all" or comma-separated fold ids
    seeds: list[int] = field(default_factory=lambda: [0])
    protocol: str = "val"
    set: list[str] = field(default_factory=list)   # every variant; "NAME:key=v" one only
    trust_pickle: bool = False
    log: list[str] = field(default_factory=list)   # train.log of this command's cells (e.g.
                                                   # [tensorboard]); like trust_pickle, not
                                                   # part of the grid: curves change no result


def parse_variant(text: str) -> Variant:
    """``momke`` or ``hardymer:no-h-dir`` (an ablation the method declares) -> Variant."""
    name = text.strip()
    method, _, ablation = name.partition(":")
    try:
        cls = get_method_class(method)
    except KeyError as err:
        raise ValueError(f"--methods: {err.args[0]}") from None
    if not ablation:
        return Variant(name, method)
    if ablation not in cls.ablations:
        takers = [(n, c.ablations) for n, c in METHODS if c.ablations]
        own = (f"{method} has {', '.join(cls.ablations)}" if cls.ablations
               else f"{method} takes none")
        raise ValueError(f"--methods: {name!r}: no ablation {ablation!r} ({own}); methods with "
                         "ablations: " + "; ".join(f"{n}: {', '.join(a)}" for n, a in takers))
    return Variant(name, method, list(cls.ablations[ablation].overrides))


def split_scope(item: str) -> tuple[str, str]:
    """``"NAME:key=value"`` -> ``("NAME", "key=value")``: an override for one method or variant
    only (e.g. ``momke:train.epochs=[5,5]``; a variant's name may hold a colon itself:
    ``hardymer:mass:model.k=5``); ``"key=value"`` -> ``("", "key=value")``."""
    head, eq, value = item.partition("=")
    name, _, key = head.rpartition(":")
    return name, key + eq + value


def load_spec(path: Path | None = None, **cli) -> SweepSpec:
    """A YAML grid file (optional) with command-line values merged over it.

    ``methods`` entries are strings (as on the command line) or mappings
    ``{name, method, set}``.
    """
    raw: dict = {}
    if path is not None:
        try:
            raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True) or {}
        except (OSError, ValueError, OmegaConfBaseException) as err:
            raise ValueError(f"--config {path}: cannot read as YAML: {err}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"--config {path}: expected a mapping of grid fields, got "
                             f"{type(raw).__name__}")
        # Reading a pickle runs code: only the person at the command line may allow it.
        if raw.pop("trust_pickle", False):
            raise ValueError(f"--config {path}: trust_pickle is not read from a grid file (a "
                             "pickle can run code); pass --trust-pickle on the command line "
                             "to allow reading the label pickle")
        allowed = [f for f in SweepSpec.__dataclass_fields__ if f != "trust_pickle"]
        for key in raw:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                raise ValueError(f"--config {path}: unknown key {key!r}"
                                 + (f"; did you mean {close[0]}?" if close else "")
                                 + f" (grid keys: {', '.join(allowed)})")
    raw.update({k: v for k, v in cli.items() if v not in (None, [], "")})
    for k in ("methods", "conditions", "seeds", "set"):
        if k in raw:  # absent: the SweepSpec default (seeds [0], conditions all)
            raw[k] = _as_list(raw[k], k)
    if isinstance(raw.get("folds"), (list, tuple)):
        raw["folds"] = ",".join(str(f) for f in raw["folds"])
    if raw.get("folds") is None:
        raw.pop("folds", None)
    methods = []
    for m in raw.pop("methods", []):
        if isinstance(m, str):
            methods.append(parse_variant(m))
        elif isinstance(m, dict) and "method" in m:
            try:
                get_method_class(m["method"])
            except KeyError as err:
                raise ValueError(f"methods: {err.args[0]}") from None
            methods.append(Variant(m.get("name", m["method"]), m["method"],
                                   list(m.get("set", []))))
        else:
            raise ValueError(f"methods: each entry is a name or {{name, method, set}}; got {m!r}")
    spec = SweepSpec(methods=methods, **raw)
    if not spec.data:
        raise ValueError("no data: give --data or `data:` in the config file")
    spec.data = source_id(spec.data)
    if not spec.methods:
        raise ValueError("no methods: " + TEXT_HINT)
    names = [v.name for v in spec.methods]
    if len(set(names)) != len(names):
        raise ValueError(f"methods: names must be unique, got {names}")
    common = []
    for item in spec.set:
        name, override = split_scope(item)
        if not name:
            common.append(item)
            continue
        key, _, value = override.partition("=")
        # A variant's own name, or a base method's: then every variant of it (so
        # hardymer:model.x=… reaches hardymer:no-finetune too).
        targets = [v for v in spec.methods if v.name == name or v.method == name]
        if not targets:
            raise ValueError(f"--set {item!r}: no method or variant named {name!r}; the "
                             f"sweep's are {', '.join(names)} (base methods: "
                             f"{', '.join(dict.fromkeys(v.method for v in spec.methods))}); "
                             f"e.g. --set {names[0]}:{key}={value}")
        for v in targets:
            v.set.append(f"{key}={value}")
    spec.set = common
    for v in spec.methods:
        for item in spec.set + v.set:
            key = item.partition("=")[0].strip()
            if key in GRID_KEYS:
                raise ValueError(f"--set {item!r}: {key} is a field of the grid in a sweep; "
                                 f"use {GRID_KEYS[key]} instead")
    try:
        spec.seeds = list(dict.fromkeys(int(s) for s in spec.seeds))
    except (TypeError, ValueError):
        raise ValueError(f"seeds: expected integers, got {spec.seeds!r}") from None
    spec.conditions = list(dict.fromkeys(str(c) for c in spec.conditions))
    spec.folds = str(spec.folds)
    if spec.folds != "all":
        try:
            spec.folds = ",".join(dict.fromkeys(str(int(x)) for x in spec.folds.split(",")))
        except ValueError:
            raise ValueError(f"folds: 'all' or comma-separated fold ids, got "
                             f"{spec.folds!r}") from None
    return spec


def _as_list(value, name: str) -> list:
    """A grid field as a list: YAML scalars and comma-separated strings become lists."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()] if name != "set" else [value]
    if isinstance(value, (int, float, dict)):
        return [value]
    return list(value)


@dataclass
class Unit:
    variant: Variant
    seed: int
    fold: int
    conditions: list[str]


class SweepFolder:
    """The sweep folder, as one class (the layout in the module docstring).

    Parameters
    ----------
    path : the folder given as ``--out`` to ``hardymer sweep``
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def store_path(self) -> Path:
        return self.path / "results.sqlite"

    @property
    def grid_path(self) -> Path:
        return self.path / "sweep.json"

    def store(self) -> ResultsStore:
        return ResultsStore(self.store_path)

    def grid(self) -> dict:
        """``sweep.json`` as written (empty when the folder has none)."""
        return json.loads(self.grid_path.read_text()) if self.grid_path.is_file() else {}

    def lock(self, notify=None):
        """Hold ``SWEEP/.lock`` for a command: one sweep command per folder at a time."""
        return folder_lock(self.path, notify=notify)

    def run_dir(self, variant: str, seed: int) -> Path:
        """``SWEEP/runs/<variant>/seed<k>/``: an ordinary run folder."""
        return self.path / "runs" / variant.replace("/", "_").replace(":", "-") / f"seed{seed}"


def _run_dir(out: Path, variant: str, seed: int) -> Path:
    return SweepFolder(out).run_dir(variant, seed)


def _config(spec: SweepSpec, v: Variant, seed: int, family: str):
    return load_run_config(v.method, family, spec.set + v.set + [
        f"train.seed={seed}", f"train.protocol={spec.protocol}"] + trackers.override(spec.log))


def _run_unit(out: Path, spec: SweepSpec, unit: Unit, threads: int | None,
              progress: bool) -> list[dict]:
    """Train one unit (in this or a worker process); returns its records."""
    if threads:
        torch.set_num_threads(threads)
    with warnings.catch_warnings():  # what loading leaves out was said when the sweep began
        warnings.simplefilter("ignore", DataWarning)
        ds = open_data(spec.data, allow_pickle=spec.trust_pickle, mmap=True)
    cfg = _config(spec, unit.variant, unit.seed, ds.family)
    conds = [parse_condition(c, ds.modalities) for c in unit.conditions]
    t0 = time.perf_counter()
    recs = run_experiment(cfg, ds, conds, [unit.fold], _run_dir(out, unit.variant.name, unit.seed),
                          data_source=spec.data, progress=progress, lock=False)
    return [dict(r, unit_seconds=time.perf_counter() - t0) for r in recs]


@dataclass(frozen=True)
class Backend:
    """Where units run: ``local`` (this process, or ``workers`` spawned ones) or ``ray``
    (tasks on a local Ray, or on the cluster at ``address``, each asking for ``cpus`` CPUs
    and ``gpus`` GPUs)."""

    kind: str = "local"
    address: str | None = None
    cpus: float = 1.0
    gpus: float = 0.0

    def check(self) -> None:
        if self.kind not in ("local", "ray"):
            raise ValueError(f"--backend {self.kind!r}: expected 'local' or 'ray'")
        if self.kind == "ray":
            if self.cpus <= 0 or self.gpus < 0:
                raise ValueError(f"--cpus-per-cell {self.cpus} / --gpus-per-cell {self.gpus}: "
                                 "expected CPUs > 0 and GPUs >= 0")
            try:
                import ray  # noqa: F401  (optional: the cluster extra)
            except ImportError:
                raise ValueError("--backend ray needs Ray: pip install -e \".[cluster]\" "
                                 "(or pip install 'hardymer[cluster]')") from None
        elif self.address is not None:
            raise ValueError("--address is for --backend ray")


def run_sweep(spec: SweepSpec, out: Path, workers: int = 1, progress: bool = True,
              on_cell: Callable[[dict], None] | None = None,
              on_plan: Callable[[str], None] | None = None,
              backend: Backend = Backend()) -> ResultsStore:
    """Run every unfinished cell of the grid into ``out``; returns the results store.

    Every variant's config and folds are checked before anything is written; the folder is
    held for the command (:meth:`SweepFolder.lock`). ``on_plan`` hears each variant's fold
    scheme and schedule; ``on_cell`` is called in the parent with each stored row (tests use
    it to interrupt). ``backend``: where the units run (:class:`Backend`).
    """
    out = Path(out)
    if launched()[1] > 1:
        raise ValueError("hardymer sweep runs its cells in parallel itself (--workers N, or "
                         "--backend ray for a cluster); start it without torchrun, which is "
                         "for one `hardymer train` on several GPUs or machines")
    check_out_folder(out, "sweep.json", "sweep")
    if workers < 1:
        raise ValueError(f"--workers {workers}: expected 1 or more processes")
    backend.check()
    ds = open_data(spec.data, allow_pickle=spec.trust_pickle, mmap=True)
    conds = []
    for c in spec.conditions:
        conds += (all_fixed_conditions(ds.modalities) if c == "all"
                  else [parse_condition(c, ds.modalities)])
    cond_names = list(dict.fromkeys(c.name for c in conds))
    if not spec.seeds:
        raise ValueError("seeds: the grid has no seeds; give --seeds (e.g. --seeds 0,1,2)")
    # Every config and fold list is checked before the first file is written.
    _grid(out, spec)
    units, plans = [], []
    for v in spec.methods:
        for seed in spec.seeds:
            try:
                cfg = _config(spec, v, seed, ds.family)
                check_run(cfg, ds)
            except ValueError as err:
                raise ValueError(f"{v.name}: {err}") from None
            folds = make_folds(ds, val_fraction=cfg.train.val_fraction,
                               seed=cfg.train.split_seed, scheme=cfg.train.folds_scheme)
            ids = checked_fold_ids(folds, None if spec.folds == "all" else
                                   [int(x) for x in spec.folds.split(",")])
            Run(_run_dir(out, v.name, seed)).check(cfg, spec.data, ds)
            plans.append((v, seed, cfg, ids, folds[0].scheme))
            if on_plan is not None and seed == spec.seeds[0]:
                on_plan(f"{v.name}: folds {folds[0].scheme}; "
                        + schedule_text(cfg, ds, len(ids), len(cond_names)))
            units += [Unit(v, seed, k, cond_names) for k in ids]
    with SweepFolder(out).lock():
        return _run_units(out, spec, ds, cond_names, plans, units, workers, progress, on_cell,
                          backend)


def _run_units(out, spec, ds, cond_names, plans, units, workers, progress, on_cell, backend):
    folder = SweepFolder(out)
    atomic_write_json(folder.grid_path, _grid(out, spec))  # checked again, now under the lock
    store = folder.store()
    # Run folders are prepared by the parent, so workers never race on run.json.
    for v, seed, cfg, ids, scheme in plans:
        Run(_run_dir(out, v.name, seed)).prepare(
            cfg, spec.data, ds, [parse_condition(c, ds.modalities) for c in cond_names], ids,
            scheme)
    done = store.keys()
    key = lambda u, c: (u.variant.name, spec.data, c, u.fold, u.seed)  # noqa: E731
    todo = [u for u in units if any(key(u, c) not in done for c in u.conditions)]
    total = len(units) * len(cond_names)
    bar = tqdm(total=total, initial=total - len(todo) * len(cond_names), unit="cell",
               desc=f"sweep {out.name}", disable=not progress, dynamic_ncols=True)
    meta, vers = dataset_meta(ds), versions()

    configs = {(v.name, seed): cfg for v, seed, cfg, _, _ in plans}

    def record(unit: Unit, recs: list[dict]) -> None:
        cfg = configs[unit.variant.name, unit.seed]
        for r in recs:
            row = results_row(dict(r, seed=unit.seed), variant=unit.variant.name,
                              method=unit.variant.method, data=spec.data,
                              config=cfg.to_dict(), meta=meta, versions=vers,
                              run_dir=str(_run_dir(out, unit.variant.name, unit.seed)))
            if key(unit, r["condition"]) not in done:
                store.add(row)
                done.add(key(unit, r["condition"]))
            bar.update(1)
            if on_cell is not None:
                on_cell(row)

    if backend.kind == "ray":
        _run_on_ray(out, spec, todo, backend, record)
    elif workers <= 1:
        for u in todo:
            record(u, _run_unit(out, spec, u, None, progress=False))
    else:
        threads = max(1, len(os.sched_getaffinity(0)) // workers)
        pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
        try:
            pending = {pool.submit(_run_unit, out, spec, u, threads, False): u for u in todo}
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for f in finished:
                    record(pending.pop(f), f.result())
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # stop now; finished cells are kept
            raise
        pool.shutdown()
    bar.close()
    return store


def _run_on_ray(out, spec, todo, backend: Backend, record) -> None:
    """Every unit as a Ray task; records arrive in the driver as tasks finish."""
    import ray  # optional (the cluster extra): imported only for --backend ray
    started = not ray.is_initialized()
    if started:   # a cluster at the address, or a local Ray of this machine's cores
        ray.init(address=backend.address, include_dashboard=False, log_to_driver=False,
                 **({} if backend.address else {"num_cpus": len(os.sched_getaffinity(0))}))
    task = ray.remote(num_cpus=backend.cpus, num_gpus=backend.gpus)(_run_unit)
    threads = max(1, int(backend.cpus))
    pending = {task.remote(out, spec, u, threads, False): u for u in todo}
    try:
        while pending:
            finished, _ = ray.wait(list(pending), num_returns=1)
            for ref in finished:
                record(pending.pop(ref), ray.get(ref))
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)   # stop now; finished cells are kept
        raise
    finally:
        if started:
            ray.shutdown()


def _grid(out: Path, spec: SweepSpec) -> dict:
    """The ``sweep.json`` this command writes: the stored grid grown by this one (same
    methods' definitions; conditions and seeds may grow); ValueError when the folder holds
    another grid. Writes nothing."""
    folder = SweepFolder(out)
    want = asdict(spec)
    want.pop("trust_pickle")  # an opt-in of one command, never stored for the next
    want.pop("log")
    if folder.grid_path.is_file():
        have = folder.grid()
        defs = lambda s: {m["name"]: (m["method"], m["set"]) for m in s["methods"]}  # noqa
        clash = {n for n in set(defs(have)) & set(defs(want)) if defs(have)[n] != defs(want)[n]}
        if have["data"] != want["data"] or have["set"] != want["set"] or clash or \
                have["protocol"] != want["protocol"]:
            raise ValueError(f"{out} holds a sweep with another data set, protocol or method "
                             f"definition ({sorted(clash) or 'data/protocol/set'}); use another "
                             "--out to start a new one")
        # Every definition ever run stays recorded, so later runs are checked against all.
        known = {m["name"] for m in want["methods"]}
        want["methods"] = want["methods"] + [m for m in have["methods"] if m["name"] not in known]
        for k in ("conditions", "seeds"):
            want[k] = list(dict.fromkeys(have[k] + want[k]))
    return want
