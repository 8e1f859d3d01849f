"""Data-parallel training (torchrun / DDP, gloo on CPU) computes what one process computes.

Two processes on the tiny preset, dropout off: the weights after the first optimizer step and
after a whole fit equal a one-process run's with the same (global) batch size; only rank 0
writes; a run killed mid-fit and started again ends as the uninterrupted one did.
"""
from __future__ import annotations

import builtins
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from hardymer.data.synthetic import generate
from hardymer.protocol.conditions import parse_condition
from hardymer.runs.config import load_run_config
from hardymer.runs.experiment import run_experiment
from hardymer.training.distributed import SINGLE, Distributed

SETS = ["model.hidden=16", "model.depth=1", "model.dropout=0", "train.lr=1e-3",
        "train.batch_size=3"]   # 3 sequences a batch: uneven shares, and a last batch of one


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(dist, out: Path, method: str, sets: list[str], conditions: list[str]) -> list[dict]:
    torch.set_num_threads(1)
    ds = generate("tiny", seed=0)
    cfg = load_run_config(method, ds.family, sets)
    conds = [parse_condition(c, ds.modalities) for c in conditions]
    return run_experiment(cfg, ds, conds, [0], out, progress=False, dist=dist)


def _worker(rank: int, world: int, port: int, jobs: list[tuple], report: str) -> None:
    """Each job ``(out, method, sets, conditions)`` in turn, in one process group."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    dist = Distributed.from_env("cpu")
    writes = []
    outs = tuple(job[0] for job in jobs)
    if rank:   # record every way rank 1 could write under the run folders
        def watch(fn, mode_of):
            def wrapped(*a, **k):
                path = str(a[0]) if a else ""
                if path.startswith(outs) and mode_of(a, k):
                    writes.append(f"{fn.__name__} {path}")
                return fn(*a, **k)
            return wrapped
        builtins.open = watch(builtins.open, lambda a, k: any(
            c in (a[1] if len(a) > 1 else k.get("mode", "r")) for c in "wax+"))
        os.replace = watch(os.replace, lambda a, k: True)
        os.rename = watch(os.rename, lambda a, k: True)
        os.mkdir = watch(os.mkdir, lambda a, k: True)
        sqlite3.connect = watch(sqlite3.connect, lambda a, k: True)
    records = [_run(dist, Path(out), method, sets, conds) for out, method, sets, conds in jobs]
    Path(report).with_suffix(f".rank{rank}.json").write_text(
        json.dumps({"records": records, "writes": writes}))
    torch.distributed.destroy_process_group()


def _two_processes_all(tmp_path: Path, jobs: list[tuple[str, list[str], list[str]]]):
    """Jobs ``(method, sets, conditions)`` on 2 gloo processes (one start for all), each into
    ``tmp_path/ddp-<method>``; returns the folders and, per rank, ``{"records": [per job],
    "writes": [...]}``."""
    outs = [tmp_path / f"ddp-{method}" for method, _, _ in jobs]
    report = tmp_path / "report"
    mp.spawn(_worker, args=(2, _free_port(), [(str(o), *job) for o, job in zip(outs, jobs)],
                            str(report)), nprocs=2, join=True)
    return outs, [json.loads(report.with_suffix(f".rank{r}.json").read_text()) for r in (0, 1)]


def _two_processes(tmp_path: Path, method: str, sets: list[str], conditions: list[str]):
    outs, reports = _two_processes_all(tmp_path, [(method, sets, conditions)])
    return outs[0], [{"records": r["records"][0], "writes": r["writes"]} for r in reports]


def _weights(cell: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(cell / "last.safetensors")).items()
            if k.startswith("model.")}


def _same_weights(a: Path, b: Path, tol: float) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    worst = max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa)
    assert worst < tol, worst


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


KEYS = ("selected_epoch", "val_WA", "val_UA", "test_WA", "test_UA", "test_F1")


def test_first_step_on_two_processes_equals_one_process(tmp_path):
    """One optimizer step (stage 1 skipped; one global batch of every training sequence,
    split 8 / 8 between the ranks), under a fixed condition and a random missing rate: the
    weights equal one process's to 1e-5."""
    sets = SETS + ["train.epochs=[0,1]", "train.batch_size=64"]
    conds = ["at", "random:0.5"]
    out, reports = _two_processes(tmp_path, "momke", sets, conds)
    _run(SINGLE, tmp_path / "one", "momke", sets, conds)
    cells = sorted(p.name for p in (out / "fold0").iterdir() if p.name != "_shared")
    assert len(cells) == 2
    for cell in cells:
        _same_weights(out / "fold0" / cell, tmp_path / "one" / "fold0" / cell, 1e-5)
        # the logged throughput counts every rank's utterances, as one process counts them
        assert _utterances(out / "fold0" / cell) == \
            _utterances(tmp_path / "one" / "fold0" / cell) != []
    assert reports[1]["writes"] == []


def _utterances(cell: Path) -> list[int]:
    """Training utterances per logged epoch: throughput × seconds."""
    rows = [json.loads(line) for line in (cell / "metrics.jsonl").read_text().splitlines()]
    return [round(r["train_utt_per_s"] * r["train_seconds"]) for r in rows
            if "train_utt_per_s" in r]


@pytest.mark.slow
def test_two_process_fit_equals_one_process_and_only_rank_0_writes(tmp_path):
    """Whole fits (shared stage 1, then two conditions) with uneven shares and a one-sequence
    last batch: same weights (1e-4 after 18 Adam steps), same records and the same files
    as one process; rank 1 wrote nothing under the run folder."""
    sets = SETS + ["train.epochs=[2,4]"]
    out, reports = _two_processes(tmp_path, "momke", sets, ["at", "v"])
    one = _run(SINGLE, tmp_path / "one", "momke", sets, ["at", "v"])
    for cond in ("at", "v"):
        _same_weights(out / "fold0" / cond, tmp_path / "one" / "fold0" / cond, 1e-4)
    for r in (0, 1):
        got = reports[r]["records"]
        assert [{k: g[k] for k in KEYS} for g in got] == \
            [{k: pytest.approx(w[k], abs=1e-9) if k != "selected_epoch" else w[k] for k in KEYS}
             for w in one]
    assert reports[1]["writes"] == []
    assert _files(out) == _files(tmp_path / "one")


def _epochs(path: Path) -> int:
    try:
        return int(json.loads(path.read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow
def test_torchrun_killed_mid_fit_resumes_to_the_uninterrupted_result(tmp_path):
    """``torchrun --nproc-per-node 2 -m hardymer train``: killed (SIGKILL to every process)
    after epoch 3 of the cell's 8, the same command again ends with the uninterrupted run's
    metrics, selected epoch and weights."""
    args = ["--nproc-per-node", "2", "-m", "hardymer", "train", "--data", "synth:tiny",
            "--method", "momke", "--condition", "at", "--fold", "0", "--no-progress",
            "--set", "train.epochs=[1,8]", "--set", "train.checkpoint_every=1",
            *[x for s in SETS for x in ("--set", s)]]
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cut, whole = tmp_path / "cut", tmp_path / "whole"
    proc = subprocess.Popen([*torchrun, "--master-port", str(_free_port()), *args,
                             "--out", str(cut)], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = cut / "fold0" / "at" / "last.json"
    deadline = time.time() + 120
    while _epochs(last) < 4 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (cut / "fold0" / "at" / "result.json").exists()
    for folder in (cut, whole):
        done = subprocess.run([*torchrun, "--master-port", str(_free_port()), *args,
                               "--out", str(folder)], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
    got, want = (json.loads((f / "fold0" / "at" / "result.json").read_text())
                 for f in (cut, whole))
    assert {k: got[k] for k in KEYS} == {k: want[k] for k in KEYS}
    _same_weights(cut / "fold0" / "at", whole / "fold0" / "at", 1e-7)
    assert "| momke | at |" in done.stdout and done.stdout.count("| momke | at |") == 1


def _family_sets(name: str) -> list[str]:
    from test_baselines import EPOCHS
    from test_methods import SMALL
    from hardymer.models import get_method_class
    import dataclasses
    cls = get_method_class(name)
    off = [f"model.{f.name}=0" for f in dataclasses.fields(cls.Config)
           if f.name.endswith("dropout")]
    sets = [f"model.{k}={v}" for k, v in SMALL.get(name, {}).items()] + off
    if name == "hardymer":
        sets += ["model.hidden=16", "model.depth=1", "model.teacher_epochs=[1,1]",
                 "model.finetune_epochs=1"]
    return sets + [f"train.epochs={EPOCHS.get(name, [1, 2])}", "train.batch_size=3",
                   "train.lr=1e-3"]


# Measured weight differences after these fits (docs/scale.md): exact up to float rounding for
# per-utterance losses; IMDer draws its diffusion times and noise per rank (other draws than
# one process makes), so it is checked for running, agreeing ranks and rank-0 writes only.
FAMILIES = {"hardymer": 1e-4,    # fine-tuning and teacher by rank 0, plans on every rank
            "gcnet": 1e-4,       # dialogue graphs: a rank's sequences stay whole
            "imder": None}


@pytest.mark.slow
def test_each_method_family_trains_on_two_processes(tmp_path):
    names = sorted(FAMILIES)
    outs, reports = _two_processes_all(tmp_path, [(n, _family_sets(n), ["at"]) for n in names])
    assert reports[1]["writes"] == []
    for j, (name, out) in enumerate(zip(names, outs)):
        timeless = [[{k: v for k, v in r.items() if k != "seconds"} for r in rep["records"][j]]
                    for rep in reports]
        assert timeless[0] == timeless[1], name                   # every rank selects alike
        assert (out / "fold0" / "at" / "result.json").is_file()
        if FAMILIES[name] is not None:
            one = _run(SINGLE, tmp_path / f"one-{name}", name, _family_sets(name), ["at"])
            _same_weights(out / "fold0" / "at", tmp_path / f"one-{name}" / "fold0" / "at",
                          FAMILIES[name])
            assert reports[0]["records"][j][0]["test_WA"] == pytest.approx(one[0]["test_WA"])
