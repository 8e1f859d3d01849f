"""Training at growing data sizes: time and peak memory of MoMKE training and of HARDY-MER's
per-fold preparation (fine-tuning, teacher, index build, plan) per size.

Writes generic data sets of N utterances (features a 512 / t 1024 / v 1024 float32, written in
chunks straight to ``features/<m>.npy``, dialogues of 20 utterances in five sessions, four
random classes). For each size, in fresh processes on the memory-mapped data:

* ``hardymer train`` — MoMKE, fold 0, condition ``at``, stage 1 skipped, one stage-2 epoch —
  its wall time and peak RSS (polled from /proc: all of it, and the anonymous part); with the
  old path (``--no-mmap``, features loaded whole) beside it;
* HARDY-MER's preparation of fold 0 under ``at`` (``model.index=auto``: exact search up to
  10⁵ database vectors, IVF-PQ above), phase by phase: fine-tuning (one epoch per modality),
  teacher (one + one epochs), the database build, the plan's hardness terms, the plan's
  retrieval (every training query searched under its mask) and the rest of the plan; each
  phase's wall time and peak anonymous RSS (polled inside the process, reset per phase).

The data on disk is N × 10 KB (10⁶ utterances: 10 GB; HARDY-MER's fine-tuned copy as much
again). Run alone.

    python bench/scale.py                       # N = 10^4 and 10^5
    python bench/scale.py --sizes 1000000 --keep /big/disk/scale --no-old

What it shows (#17 point 4): whether peak RSS stays flat as N grows (the target: under 4 GB,
time linear in N).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from memory import Peak, json_child, status  # the sibling module

DIMS = {"a": 512, "t": 1024, "v": 1024}


def write(folder: Path, n: int, seed: int = 0, chunk: int = 50_000) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    per = 20
    seq = np.arange(n) // per
    labels = rng.integers(0, 4, n)
    pd.DataFrame({"utterance_id": [f"u{i}" for i in range(n)],
                  "sequence_id": [f"d{s}" for s in seq], "position": np.arange(n) % per,
                  "label": labels, "session": 1 + seq % 5}).to_csv(folder / "utterances.csv",
                                                                   index=False)
    (folder / "features").mkdir(exist_ok=True)
    means = {m: rng.normal(size=(4, d)).astype(np.float32) for m, d in DIMS.items()}
    for m, d in DIMS.items():
        x = np.lib.format.open_memmap(folder / "features" / f"{m}.npy", mode="w+",
                                      dtype=np.float32, shape=(n, d))
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            x[s:e] = means[m][labels[s:e]] + rng.normal(size=(e - s, d)).astype(np.float32)
        x.flush()
        del x
    (folder / "dataset.json").write_text(json.dumps({
        "format": "hardymer-generic", "version": 1, "name": f"scale-{n}",
        "task": "classification", "modalities": DIMS,
        "class_names": ["c0", "c1", "c2", "c3"]}))
    return folder


def train(data: Path, out: Path, mmap: bool = True) -> tuple[float, float, float]:
    """Wall seconds, peak RSS and peak anonymous RSS (GB) of one `hardymer train` in a child
    process, polled from /proc every 0.1 s. Pages of a memory-mapped file count in RSS while
    resident (the kernel may drop them); anonymous memory is what the process itself holds."""
    cmd = [sys.executable, "-m", "hardymer", "train", "--data", str(data), "--method", "momke",
           "--condition", "at", "--fold", "0", "--set", "train.epochs=[0,1]", "--no-progress",
           "--mmap" if mmap else "--no-mmap", "--out", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rss = anon = 0
    while proc.poll() is None:
        st = status(proc.pid)
        rss, anon = max(rss, st.get("VmRSS", 0)), max(anon, st.get("RssAnon", 0))
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(proc.stderr.read()[-2000:])
    return wall, rss / 2 ** 20, anon / 2 ** 20


def hardymer_phases(data: Path, out: Path) -> list[tuple[str, float, float]]:
    """HARDY-MER's preparation of fold 0 under ``at`` on the mapped data, phase by phase:
    ``(phase, seconds, peak anonymous GB)``. The phases are timed by wrapping the functions the
    preparation calls (the code under test runs unchanged)."""
    import hardymer.models.hardymer.context as context
    from hardymer.api import run_config
    from hardymer.data.generic import read_generic
    from hardymer.models import get_method_class
    from hardymer.protocol.conditions import parse_condition
    from hardymer.protocol.splits import make_folds
    from hardymer.training.loaders import FoldData

    peak, rows = Peak(), []

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            peak.reset()
            t0 = time.perf_counter()
            result = fn(*args, **kwargs)
            rows.append((name, time.perf_counter() - t0, peak.gb()))
            print(f"      ... {name}: {rows[-1][1]:.1f} s, {rows[-1][2]:.2f} GB",
                  file=sys.stderr, flush=True)   # progress: a large size takes an hour
            return result
        return wrapper

    context.finetune_features = timed("fine-tuning (1 epoch)", context.finetune_features)
    context.train_teacher = timed("teacher (1 + 1 epochs)", context.train_teacher)
    db = context.FeatureDatabase
    build = db.build.__func__
    context.FeatureDatabase = type("TimedDatabase", (db,), {
        "build": classmethod(timed("index build", lambda cls, *a, **k: build(db, *a, **k)))})
    context.hardness_terms = timed("plan: hardness terms", context.hardness_terms)
    context.rank_candidates = timed("plan: retrieval", context.rank_candidates)
    context.build_plan = timed("plan: the rest", context.build_plan)

    ds = read_generic(data, mmap=True)
    fold = make_folds(ds)[0]
    cfg = run_config("hardymer", ds.family, ["model.finetune_epochs=1",
                                              "model.teacher_epochs=[1,1]",
                                              "model.index=auto"])
    cls = get_method_class("hardymer")
    peak.reset()
    t0 = time.perf_counter()
    ctx = cls.prepare_fold(cls.Config(**cfg.model), ds, fold, cfg.train, out, progress=False)
    mask = FoldData(ds, fold, parse_condition("at", ds.modalities)).train_mask(1)
    ctx.plan(mask, 1, out)
    rows.append(("preparation and plan, in all", time.perf_counter() - t0,
                 max([peak.gb()] + [r[2] for r in rows])))
    rows.append((f"(index: {ctx.database.kind}, {len(ctx.database):,} vectors; "
                 f"{len(ctx.train_ids):,} queries)", float("nan"), float("nan")))
    return rows


def hardymer_child(data: Path, out: Path) -> list[tuple[str, float, float]]:
    """:func:`hardymer_phases` in a fresh process (peaks of one size do not carry over)."""
    rows = json_child(__file__, ["--hardymer-phases", str(data), str(out)], "the HARDY-MER child")
    return [tuple(r) for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--keep", type=Path, default=None, help="write the data sets here "
                    "(default: a temporary folder, deleted at the end)")
    ap.add_argument("--no-old", dest="old", action="store_false",
                    help="skip the old path (features loaded whole: --no-mmap)")
    ap.add_argument("--no-hardymer", dest="hardymer", action="store_false",
                    help="skip HARDY-MER's preparation and plan")
    ap.add_argument("--no-momke", dest="momke", action="store_false",
                    help="skip the MoMKE epoch")
    ap.add_argument("--hardymer-phases", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.hardymer_phases:   # the child process of hardymer_child
        print(json.dumps(hardymer_phases(*args.hardymer_phases)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        for n in sorted(int(s) for s in args.sizes.split(",")):   # ascending: max RSS per N
            t0 = time.perf_counter()
            data = write(root / f"data-{n}", n)
            made = time.perf_counter() - t0
            print(f"N={n:>9,}  data {made:6.1f} s ({n * sum(DIMS.values()) * 4 / 2 ** 30:.2f} "
                  "GB)", flush=True)
            for mmap in (([False] if args.old else []) + [True]) if args.momke else []:
                wall, rss, anon = train(data, root / f"run-{n}-{mmap}", mmap)
                print(f"  {'memory maps (default)' if mmap else 'loaded (--no-mmap, old)':24s}"
                      f" train, one stage-2 epoch with load and evaluation: {wall:7.1f} s"
                      f"  peak RSS {rss:5.2f} GB (anonymous {anon:5.2f} GB)", flush=True)
            if args.hardymer:
                print("  HARDY-MER preparation of fold 0 under at (memory maps):", flush=True)
                for name, sec, gb in hardymer_child(data, root / f"hardymer-{n}"):
                    print(f"    {name:32s}" + ("" if sec != sec else
                          f" {sec:8.1f} s  peak anonymous RSS {gb:5.2f} GB"), flush=True)


if __name__ == "__main__":
    main()
