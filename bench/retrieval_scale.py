"""Retrieval at scale: exact search against IVF, IVF-PQ (re-ranked) and HNSW.

For each database size N: N vectors of dimension d (a Gaussian mixture of N / 100 clusters,
written to a float32 memory map on disk and indexed from it, as the plan indexes a data set's
features), Q queries that are database vectors plus noise (the plan's queries are training
samples). Reports per index kind: build time, search time per query, recall@k against exact
search, the index's size (FAISS serialised bytes; the re-ranking of IVF-PQ reads the raw
vectors from the memory map, which stay on disk) and the build's peak anonymous RSS (what the
process holds beyond the mapped vectors; each build in a fresh process). IVF kinds are built under each ``--train-mb`` rule
side by side: the default 256 MiB budget of the k-means training sample, and ``none``, the
uncapped sample (256 points per list, up to all N) that came before it.

    python bench/retrieval_scale.py                       # N = 10^4 and 10^5, d = 1024
    python bench/retrieval_scale.py --sizes 1000000 --kinds ivfpq,hnsw   # 4 GB of vectors
    python bench/retrieval_scale.py --sizes 720000 --kinds ivfpq          # budget vs uncapped

Run alone: FAISS uses every core.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from hardymer.retrieval.index import FeatureDatabase, default_nlist, ivf_train_size
from memory import Peak, json_child  # the sibling module


def mixture(path: Path, n: int, d: int, seed: int = 0, chunk: int = 65_536) -> np.memmap:
    """(n, d) float32 memory map: cluster centres (N(0, 1)) plus N(0, 0.5) noise per row."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n // 100), d)).astype(np.float32)
    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        x[s:s + m] = centres[rng.integers(0, len(centres), m)] \
            + 0.5 * rng.normal(size=(m, d)).astype(np.float32)
    x.flush()
    return np.load(path, mmap_mode="r")


def index_bytes(db: FeatureDatabase) -> int:
    return sum(len(faiss.serialize_index(i)) for i in db.indexes.values())


def build_and_search(x_path: Path, q_path: Path, kind: str, train_mb: float | None, k: int,
                     seed: int) -> dict:
    """One index built over the mapped vectors and searched with the queries: build and search
    seconds, the build's peak anonymous RSS above the process's before it (GB), index MB;
    the result ids are written beside the queries."""
    x, q = np.load(x_path, mmap_mode="r"), np.load(q_path)
    peak = Peak()
    peak.reset()
    base = peak.gb()
    t0 = time.perf_counter()
    db = FeatureDatabase.build({"a": x}, kind=kind, seed=seed, train_mb=train_mb)
    build, build_gb = time.perf_counter() - t0, peak.gb() - base
    t0 = time.perf_counter()
    _, ids = db.search("a", q, k)
    search = time.perf_counter() - t0
    np.save(q_path.with_name(f"ids-{kind}-{train_mb}.npy"), ids)
    return dict(build_s=build, build_peak_anon_gb=build_gb, search_s=search,
                index_mb=index_bytes(db) / 2 ** 20)


def _child(x_path: Path, q_path: Path, kind: str, train_mb: float | None, k: int, seed: int):
    """:func:`build_and_search` in a fresh process: one build's memory does not carry over to
    the next one's figure."""
    out = json_child(__file__, ["--child", str(x_path), str(q_path), kind, str(train_mb), str(k),
                                str(seed)], f"the {kind} build")
    return out, np.load(q_path.with_name(f"ids-{kind}-{train_mb}.npy"))


def run(sizes, d, n_queries, k, kinds, train_mbs=(256.0, None), seed=0):
    """Per size and index kind (IVF kinds under each training-sample budget), each in a fresh
    process; recall@k against the exact (flat) index's results."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            x_path, q_path = Path(tmp) / f"x{n}.npy", Path(tmp) / f"q{n}.npy"
            x = mixture(x_path, n, d, seed)
            rng = np.random.default_rng(seed + 1)
            np.save(q_path, np.asarray(x[np.sort(rng.choice(n, n_queries, replace=False))])
                    + 0.1 * rng.normal(size=(n_queries, d)).astype(np.float32))
            del x
            truth = None
            runs = [(kind, mb, ivf) for kind in ["flat"] + [k_ for k_ in kinds if k_ != "flat"]
                    for ivf in [kind in ("ivf", "ivfpq")] for mb in (train_mbs if ivf else [None])]
            for kind, mb, ivf in runs:
                res, ids = _child(x_path, q_path, kind, mb, k, seed)
                if truth is None:
                    truth = ids
                recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(truth, ids)]))
                n_train = ivf_train_size(n, d, default_nlist(n), kind, mb) if ivf else 0
                rule = ("none" if mb is None else f"{mb:g}") if ivf else "-"
                ms = 1e3 * res["search_s"] / n_queries
                rows.append(dict(n=n, kind=kind, train_mb=rule, n_train=n_train,
                                 build_s=res["build_s"],
                                 build_peak_anon_gb=res["build_peak_anon_gb"],
                                 search_ms_per_query=ms, recall=recall,
                                 index_mb=res["index_mb"]))
                print(f"N={n:>9,} {kind:6s} train_mb {rule:>5s} ({n_train:>9,} rows)  build "
                      f"{res['build_s']:8.1f} s (+{res['build_peak_anon_gb']:5.2f} GB anon)  "
                      f"search {ms:7.3f} ms/query  recall@{k} {recall:.3f}  "
                      f"index {res['index_mb']:8.1f} MB", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000", help="database sizes, comma-separated")
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--kinds", default="ivf,ivfpq,hnsw",
                    help="approximate kinds to compare with exact search (flat)")
    ap.add_argument("--train-mb", default="256,none",
                    help="IVF training-sample budgets (MiB) to compare, comma-separated; "
                         "'none': the uncapped sample (the rule before the budget)")
    ap.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:   # the child process of _child
        x_path, q_path, kind, mb, k, seed = args.child
        print(json.dumps(build_and_search(Path(x_path), Path(q_path), kind,
                                          None if mb == "None" else float(mb), int(k),
                                          int(seed))))
        return
    mbs = [None if v.strip().lower() == "none" else float(v) for v in args.train_mb.split(",")]
    run([int(s) for s in args.sizes.split(",")], args.dim, args.queries, args.k,
        args.kinds.split(","), mbs)


if __name__ == "__main__":
    main()
