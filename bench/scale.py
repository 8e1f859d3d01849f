"""Training at growing data sizes: time and peak memory of one MoMKE fit step per size.

Writes generic data sets of N utterances (features a 512 / t 1024 / v 1024 float32, written in
chunks straight to ``features/<m>.npy``, dialogues of 20 utterances in five sessions, four
random classes), then for each runs ``hardymer train`` in a fresh process — MoMKE, fold 0,
condition ``at``, stage 1 skipped, one stage-2 epoch — and reports its wall time and peak RSS
(polled from /proc: all of it, and the anonymous part). The data on disk is N × 10 KB (10⁶ utterances: 10 GB).

    python bench/scale.py                       # N = 10^4 and 10^5
    python bench/scale.py --sizes 1000000 --keep /big/disk/scale

What it shows today (#17 point 4): whether peak RSS stays flat as N grows (the target: under
4 GB, time linear in N). Run alone.
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


def _status(pid: int) -> dict[str, int]:
    """RssAnon and VmRSS (kB) of a live process from /proc (0 when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {line.split(":")[0]: int(line.split()[1]) for line in text.splitlines()
            if line.startswith(("RssAnon", "VmRSS"))}


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
        st = _status(proc.pid)
        rss, anon = max(rss, st.get("VmRSS", 0)), max(anon, st.get("RssAnon", 0))
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(proc.stderr.read()[-2000:])
    return wall, rss / 2 ** 20, anon / 2 ** 20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--keep", type=Path, default=None, help="write the data sets here "
                    "(default: a temporary folder, deleted at the end)")
    ap.add_argument("--no-old", dest="old", action="store_false",
                    help="skip the old path (features loaded whole: --no-mmap)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        for n in sorted(int(s) for s in args.sizes.split(",")):   # ascending: max RSS per N
            t0 = time.perf_counter()
            data = write(root / f"data-{n}", n)
            made = time.perf_counter() - t0
            print(f"N={n:>9,}  data {made:6.1f} s ({n * sum(DIMS.values()) * 4 / 2 ** 30:.2f} "
                  "GB)", flush=True)
            for mmap in ([False] if args.old else []) + [True]:
                wall, rss, anon = train(data, root / f"run-{n}-{mmap}", mmap)
                print(f"  {'memory maps (default)' if mmap else 'loaded (--no-mmap, old)':24s}"
                      f" train, one stage-2 epoch with load and evaluation: {wall:7.1f} s"
                      f"  peak RSS {rss:5.2f} GB (anonymous {anon:5.2f} GB)", flush=True)


if __name__ == "__main__":
    main()
