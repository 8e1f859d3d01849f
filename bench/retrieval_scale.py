"""Retrieval at scale: exact search against IVF, IVF-PQ (re-ranked) and HNSW.

For each database size N: N vectors of dimension d (a Gaussian mixture of N / 100 clusters,
written to a float32 memory map on disk and indexed from it, as the plan indexes a data set's
features), Q queries that are database vectors plus noise (the plan's queries are training
samples). Reports per index kind: build time, search time per query, recall@k against exact
search, and the index's size (FAISS serialised bytes; the re-ranking of IVF-PQ reads the raw
vectors from the memory map, which stay on disk).

    python bench/retrieval_scale.py                       # N = 10^4 and 10^5, d = 1024
    python bench/retrieval_scale.py --sizes 1000000 --kinds ivfpq,hnsw   # 4 GB of vectors

Run alone: FAISS uses every core.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from hardymer.retrieval.index import FeatureDatabase


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


def run(sizes, d, n_queries, k, kinds, seed=0):
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            x = mixture(Path(tmp) / f"x{n}.npy", n, d, seed)
            rng = np.random.default_rng(seed + 1)
            q = np.asarray(x[np.sort(rng.choice(n, n_queries, replace=False))]) \
                + 0.1 * rng.normal(size=(n_queries, d)).astype(np.float32)
            truth = None
            for kind in ["flat"] + [k_ for k_ in kinds if k_ != "flat"]:
                t0 = time.perf_counter()
                db = FeatureDatabase.build({"a": x}, kind=kind, seed=seed)
                build = time.perf_counter() - t0
                t0 = time.perf_counter()
                _, ids = db.search("a", q, k)
                search = time.perf_counter() - t0
                if truth is None:
                    truth = ids
                recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(truth, ids)]))
                rows.append(dict(n=n, kind=kind, build_s=build, search_ms_per_query=1e3 * search
                                 / n_queries, recall=recall, index_mb=index_bytes(db) / 2 ** 20))
                print(f"N={n:>9,} {kind:6s} build {build:8.1f} s  search "
                      f"{1e3 * search / n_queries:7.3f} ms/query  recall@{k} {recall:.3f}  "
                      f"index {index_bytes(db) / 2 ** 20:8.1f} MB", flush=True)
                del db
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000", help="database sizes, comma-separated")
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--kinds", default="ivf,ivfpq,hnsw",
                    help="approximate kinds to compare with exact search (flat)")
    args = ap.parse_args()
    run([int(s) for s in args.sizes.split(",")], args.dim, args.queries, args.k,
        args.kinds.split(","))


if __name__ == "__main__":
    main()
