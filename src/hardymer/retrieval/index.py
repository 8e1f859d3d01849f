"""The feature database: one FAISS index per modality over a fold's complete training samples.

HARDY-MER retrieves, for a hard sample, similar *complete* training samples as supports
(spec §1.4). The database holds one index per modality over the fine-tuned features of the
fold's training split: text by cosine (inner product on L2-normalised vectors), audio and video
by L2. Exact flat search is the default; IVF and HNSW are options for large databases.

Row ``r`` of every index is training sample ``ids[r]`` (a global id, e.g. the utterance's row in
the :class:`~hardymer.data.dataset.MERDataset`). Search results are reported as ids, with the
distance convention "smaller is closer" for both metrics: the L2 distance (not squared) for
``"l2"`` and ``1 - cos`` for ``"cosine"``.

Examples
--------
>>> import numpy as np
>>> from hardymer.retrieval import FeatureDatabase
>>> rng = np.random.default_rng(0)
>>> feats = {"a": rng.normal(size=(100, 8)), "t": rng.normal(size=(100, 16))}
>>> db = FeatureDatabase.build(feats, ids=np.arange(100) + 1000)
>>> db.modalities, db.metrics
(('a', 't'), {'a': 'l2', 't': 'cosine'})
>>> dist, ids = db.search("t", feats["t"][:2], k=3)
>>> ids[:, 0].tolist(), bool(dist[0, 0] < 1e-5)
([1000, 1001], True)
"""
from __future__ import annotations

import functools
import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Literal, Mapping

import faiss
import numpy as np

from ..data.validate import DataError

Metric = Literal["cosine", "l2"]
IndexKind = Literal["flat", "ivf", "ivfpq", "hnsw", "auto"]

METRICS = ("cosine", "l2")
INDEX_KINDS = ("flat", "ivf", "ivfpq", "hnsw", "auto")
# ``kind="auto"``: exact search up to this many vectors, IVF-PQ above. A plan searches every
# training sample against the database (N queries): exact search costs N^2 d, about 100 s at
# N = 10^5, d = 1024 on 2 cores, and its index holds a float32 copy (4 GB per modality at
# 10^6 x 1024); IVF-PQ holds d/8 bytes a vector and probes a few lists (bench/scale.py).
AUTO_EXACT_UP_TO = 100_000
# Floats of candidate vectors gathered at once when re-ranking IVF-PQ results (64 MiB).
_REFINE_FLOATS = 16 * 2 ** 20
# Rows converted to float32 and added per step: bounds the transient copy (65,536 x 1024 float32
# = 256 MiB) so that a read-only memory map larger than memory can be indexed.
CHUNK_ROWS = 65_536
# FAISS warns (and k-means degrades) below 39 training points per centroid.
_MIN_POINTS_PER_CENTROID = 39
# Training sample of the IVF coarse quantizer, drawn by us with a seed (reproducible; reads
# only those rows of a memory map): up to 256 points per centroid (FAISS's own subsampling cap)
# but at most TRAIN_MB of float32, and never under 39 per centroid. The float32 copy of the
# uncapped sample is min(N, 1024 sqrt(N)) rows: 2.9 GB at 720k x 1024 (docs/scale.md).
_TRAIN_POINTS_PER_CENTROID = 256
#: Default memory budget (MiB) of the IVF training sample; ``train_mb=None``: the uncapped rule.
TRAIN_MB = 256.0
_MAX_NLIST = 65_536
_FORMAT = "hardymer.feature_database"
_FORMAT_VERSION = 1


def default_metrics(modalities: tuple[str, ...] | list[str]) -> dict[str, Metric]:
    """The paper's metrics: text (``"t"``) by cosine, every other modality by L2.

    Parameters
    ----------
    modalities : sequence of str

    Returns
    -------
    dict of str -> {"cosine", "l2"}
    """
    return {m: ("cosine" if m == "t" else "l2") for m in modalities}


def default_nlist(n: int) -> int:
    """IVF list count for ``n`` vectors: ``4 * sqrt(n)``, capped so every list gets >= 39
    training points (and at 65,536), at least 1."""
    return int(max(1, min(4 * math.sqrt(n), n // _MIN_POINTS_PER_CENTROID, _MAX_NLIST)))


def ivf_train_size(n: int, d: int, nlist: int, kind: str = "ivf",
                   train_mb: float | None = TRAIN_MB) -> int:
    """Rows of the IVF training sample for ``n`` vectors of dimension ``d`` in ``nlist`` lists
    (see :meth:`FeatureDatabase.build`'s ``train_mb``)."""
    want = _TRAIN_POINTS_PER_CENTROID * nlist
    if train_mb is not None:
        want = min(want, int(train_mb * 2 ** 20 // (4 * d)))
    # (PQ's 256 codewords per sub-vector want >= 39 x 256 points as well)
    floor = max(_MIN_POINTS_PER_CENTROID * nlist,
                _MIN_POINTS_PER_CENTROID * 256 if kind == "ivfpq" else 0)
    return min(n, max(want, floor))


# Below this many queries, search on one thread (see FeatureDatabase.search_rows).
_THREADED_QUERIES = 1024


def _keeps_torch_threads(func):
    """FAISS and torch share one OpenMP runtime, so ``faiss.omp_set_num_threads`` sets torch's
    thread count too: without restoring it, one small search left every later training step
    of the process on one thread. Restores the count the call found."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        before = faiss.omp_get_max_threads()
        try:
            return func(*args, **kwargs)
        finally:
            faiss.omp_set_num_threads(before)
    return wrapper


def resolve_threads(n_threads: int | None = None) -> int:
    """The thread count FAISS should use.

    ``n_threads`` when given; otherwise torch's intra-op thread count when torch is loaded (so
    FAISS follows ``torch.set_num_threads`` and does not oversubscribe the cores the trainer
    uses), else ``OMP_NUM_THREADS``, else the CPUs this process may run on.
    """
    if n_threads is not None:
        return max(1, int(n_threads))
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads"):
        return max(1, int(torch.get_num_threads()))
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _as_float32_chunk(x: np.ndarray, normalise: bool) -> np.ndarray:
    """A C-contiguous float32 copy of ``x`` (n, d), L2-normalised row-wise when asked.

    Always a copy when normalising, so neither the caller's array nor a read-only memory map is
    written to. Zero rows stay zero (cosine 0 to everything) instead of becoming NaN.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if normalise:
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.maximum(norms, np.finfo(np.float32).tiny)
    return x


class FeatureDatabase:
    """One FAISS index per modality over the same N training samples.

    Build with :meth:`FeatureDatabase.build` or :meth:`FeatureDatabase.load`; the constructor
    only stores already-built parts.

    Parameters
    ----------
    indexes : dict of str -> faiss.Index
        One index per modality, all holding N vectors; the dict order is the modality order.
    ids : ndarray of int64, shape (N,)
        Global id of each row, unique and non-negative (-1 is the "no result" sentinel).
    metrics : dict of str -> {"cosine", "l2"}
    kind : {"flat", "ivf", "hnsw"}
    params : dict
        Build and search parameters (``nlist`` per modality, ``nprobe``, ``hnsw_m``,
        ``ef_search``, ``seed``), written to the sidecar by :meth:`save`.
    features : dict of str -> ndarray (N, d_m), optional
        The raw feature matrices the indexes were built from (kept by reference, not copied; a
        memory map stays a memory map). Needed for exact combined distances in
        :func:`hardymer.retrieval.retrieve_supports`; not saved by :meth:`save`.
    n_threads : int, optional
        FAISS threads; None follows :func:`resolve_threads` at every call.

    Attributes
    ----------
    modalities : tuple of str
    dims : dict of str -> int
    ids : ndarray of int64, shape (N,)
    features : dict of str -> ndarray or None
    """

    def __init__(self, indexes: dict[str, faiss.Index], ids: np.ndarray, metrics: dict[str, Metric],
                 kind: IndexKind, params: dict, features: dict[str, np.ndarray] | None = None,
                 n_threads: int | None = None) -> None:
        self.indexes = dict(indexes)
        self.ids = ids
        self.metrics = dict(metrics)
        self.kind = kind
        self.params = dict(params)
        self.features = features
        self.n_threads = n_threads
        # Sorted ids and their rows, for rows_of(): a binary search instead of a dict of N keys.
        self._order = np.argsort(ids, kind="stable")
        self._sorted_ids = ids[self._order]

    # ------------------------------------------------------------------ construction
    @classmethod
    @_keeps_torch_threads
    def build(cls, features: Mapping[str, np.ndarray], ids: np.ndarray | None = None,
              metrics: Mapping[str, Metric] | None = None, kind: IndexKind = "flat",
              nlist: int | None = None, nprobe: int = 8, hnsw_m: int = 32, ef_search: int = 64,
              ef_construction: int = 40, seed: int = 0, chunk_rows: int = CHUNK_ROWS,
              n_threads: int | None = None, pq_m: int | None = None,
              refine: int = 8, device: str = "cpu",
              train_mb: float | None = TRAIN_MB) -> "FeatureDatabase":
        """Index the complete features of N training samples, one index per modality.

        Parameters
        ----------
        features : dict of str -> ndarray, shape (N, d_m)
            Raw (fine-tuned) features, any float dtype, may be a read-only ``np.memmap``: rows
            are converted to float32 ``chunk_rows`` at a time. The dict order fixes the
            modality order (that of ``available`` columns in retrieval).
        ids : ndarray of int, shape (N,), optional
            Global ids of the rows, unique and >= 0. Default ``arange(N)``.
        metrics : dict of str -> {"cosine", "l2"}, optional
            Per modality; missing entries fall back to :func:`default_metrics` (text cosine,
            others L2).
        kind : {"flat", "ivf", "ivfpq", "hnsw", "auto"}
            ``"flat"``: exact. ``"ivf"``: ``IndexIVFFlat`` with ``nlist`` lists, ``nprobe``
            probed. ``"ivfpq"``: ``IndexIVFPQ``, the same lists holding product-quantised
            codes of ``pq_m`` bytes (default :func:`default_pq_m`: d / 8). ``"hnsw"``:
            ``IndexHNSWFlat`` with ``hnsw_m`` links, ``ef_search``. ``"auto"``: ``"flat"`` up
            to :data:`AUTO_EXACT_UP_TO` vectors, ``"ivfpq"`` above (the chosen kind is
            :attr:`kind`). Its results are re-ranked by exact distance over ``refine`` × k
            candidates when the raw features are at hand.
        nlist : int, optional
            IVF lists; default :func:`default_nlist` (4 sqrt(N), capped at N / 39).
        nprobe : int
            IVF lists probed per query.
        hnsw_m, ef_search, ef_construction : int
            HNSW graph degree and beam widths.
        seed : int
            Seeds the IVF training sample and its k-means.
        train_mb : float or None
            Memory budget of the IVF training sample (float32 MiB): 256 points per list, cut
            to this budget but never below 39 per list (nor, for IVF-PQ, below 39 × 256 points
            for its codebooks). ``None``: no budget (256 points per list, up to all N: the
            rule before the budget, kept for comparison; ``bench/retrieval_scale.py``).
        chunk_rows : int
            Rows per add step.
        n_threads : int, optional
            FAISS threads; default :func:`resolve_threads`.
        device : {"cpu", "cuda", "cuda:N"}
            Where the indexes search: on a GPU (``faiss.index_cpu_to_gpu``; HNSW has no GPU
            form and stays on CPU) when FAISS was built with GPU support and sees one, else
            on CPU with a warning (``faiss-cpu`` has none).

        Returns
        -------
        FeatureDatabase
        """
        if not isinstance(features, Mapping) or not features:
            raise ValueError(f"Expected a non-empty dict of modality -> (N, d) array, got "
                             f"{type(features).__name__} {features!r:.80}.")
        modalities = tuple(features)
        n = None
        for m, x in features.items():
            if not isinstance(m, str) or not m:
                raise ValueError(f"Modality names must be non-empty strings, got {m!r}.")
            if not hasattr(x, "ndim") or x.ndim != 2:
                raise ValueError(f"Expected a 2D array (N, d) for modality {m!r}, got "
                                 f"{getattr(x, 'shape', type(x).__name__)}.")
            if not np.issubdtype(x.dtype, np.floating):
                raise ValueError(f"Expected float features for modality {m!r}, got {x.dtype}.")
            if n is None:
                n = x.shape[0]
            elif x.shape[0] != n:
                raise ValueError(f"All modalities need the same N rows: {modalities[0]!r} has "
                                 f"{n}, {m!r} has {x.shape[0]}.")
        if n == 0:
            raise ValueError("Cannot build a feature database from 0 samples.")
        ids = np.arange(n, dtype=np.int64) if ids is None else _check_ids(ids, n)
        metrics = _check_metrics(metrics, modalities)
        if kind not in INDEX_KINDS:
            raise ValueError(f"Expected kind in {INDEX_KINDS}, got {kind!r}.")
        if kind == "auto":
            kind = "flat" if n <= AUTO_EXACT_UP_TO else "ivfpq"
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}.")
        if train_mb is not None and not train_mb > 0:
            raise ValueError(f"train_mb must be > 0 (MiB) or None (no budget), got {train_mb}.")
        faiss.omp_set_num_threads(resolve_threads(n_threads))

        nl = default_nlist(n) if nlist is None else int(nlist)
        ivf = kind in ("ivf", "ivfpq")
        if ivf and not 1 <= nl <= n:
            raise ValueError(f"nlist must be in [1, N={n}], got {nl}.")
        pq = None
        if kind == "ivfpq":
            pq = {m: default_pq_m(x.shape[1]) if pq_m is None else int(pq_m)
                  for m, x in features.items()}
            for m, x in features.items():
                if pq[m] < 1 or x.shape[1] % pq[m]:
                    raise ValueError(f"pq_m={pq[m]} must divide modality {m!r}'s dimension "
                                     f"{x.shape[1]}")
        params = {"nprobe": int(nprobe), "hnsw_m": int(hnsw_m), "ef_search": int(ef_search),
                  "ef_construction": int(ef_construction), "seed": int(seed),
                  "nlist": nl if ivf else None, "pq_m": pq,
                  "refine": int(refine) if kind == "ivfpq" else None,
                  "train_mb": (None if train_mb is None else float(train_mb)) if ivf else None}
        indexes = {}
        for m in modalities:
            x = features[m]
            cosine = metrics[m] == "cosine"
            index = _new_index(kind, x.shape[1], cosine, params, m)
            if ivf:
                # Sorted sample rows: a memory map reads them front to back.
                rng = np.random.default_rng([seed, modalities.index(m)])
                n_train = ivf_train_size(n, x.shape[1], nl, kind, train_mb)
                rows = np.sort(rng.choice(n, size=n_train, replace=False))
                train = _as_float32_chunk(x[rows], cosine)
                _check_finite(train, m)
                index.cp.seed = int(seed)
                if kind == "ivfpq":
                    index.pq.cp.seed = int(seed)
                # Inner-product lists: unit-norm centroids, so the coarse step ranks by cosine.
                index.cp.spherical = cosine
                index.train(train)
            for start in range(0, n, chunk_rows):
                chunk = _as_float32_chunk(x[start:start + chunk_rows], cosine)
                _check_finite(chunk, m, start)
                index.add(chunk)
            indexes[m] = index
        if str(device).startswith("cuda"):
            indexes = _to_gpu(indexes, kind, int(str(device).partition(":")[2] or 0))
        return cls(indexes, ids, metrics, kind, params, features=dict(features),
                   n_threads=n_threads)

    # ------------------------------------------------------------------ properties
    @property
    def modalities(self) -> tuple[str, ...]:
        """Modality names in database order."""
        return tuple(self.indexes)

    @property
    def dims(self) -> dict[str, int]:
        """Feature dimension per modality."""
        return {m: int(ix.d) for m, ix in self.indexes.items()}

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __repr__(self) -> str:
        mods = ", ".join(f"{m}:{self.dims[m]}/{self.metrics[m]}" for m in self.modalities)
        return f"FeatureDatabase(n={len(self)}, kind={self.kind!r}, modalities=[{mods}])"

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change the IVF ``nprobe`` / HNSW ``efSearch`` of every index (recall vs speed)."""
        if nprobe is not None:
            self.params["nprobe"] = int(nprobe)
        if ef_search is not None:
            self.params["ef_search"] = int(ef_search)
        for index in self.indexes.values():
            _apply_search_params(index, self.kind, self.params)

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Row positions of global ids; -1 for ids not in the database.

        Parameters
        ----------
        ids : array-like of int, shape (...)

        Returns
        -------
        ndarray of int64, same shape
        """
        ids = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(self._sorted_ids, ids)
        pos = np.minimum(pos, len(self) - 1)
        found = self._sorted_ids[pos] == ids
        return np.where(found, self._order[pos], -1)

    # ------------------------------------------------------------------ search
    @_keeps_torch_threads
    def search_rows(self, modality: str, queries: np.ndarray,
                    k: int) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`search`, but returns row positions (into ``ids`` / ``features``)."""
        if modality not in self.indexes:
            raise ValueError(f"Unknown modality {modality!r}; the database has {self.modalities}.")
        index = self.indexes[modality]
        queries = np.asarray(queries) if not hasattr(queries, "ndim") else queries
        if queries.ndim != 2 or queries.shape[1] != index.d:
            raise ValueError(f"Expected queries of shape (Q, {index.d}) for modality "
                             f"{modality!r}, got {queries.shape}.")
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}.")
        cosine = self.metrics[modality] == "cosine"
        q = _as_float32_chunk(queries, cosine)
        _check_finite(q, modality, what="queries")
        # A small query batch gains nothing from threads, and FAISS's OpenMP workers then spin
        # and starve torch's threads in the next training step (measured: 7x slower steps).
        threads = resolve_threads(self.n_threads) if len(q) >= _THREADED_QUERIES else 1
        faiss.omp_set_num_threads(threads)
        refine = int(self.params.get("refine") or 1) if self.kind == "ivfpq" else 1
        if refine > 1 and self.features is not None:
            raw, rows = self._refined(modality, q, int(k), refine, cosine)
        else:
            raw, rows = index.search(q, int(k))  # (Q, k), (Q, k)
        missing = rows < 0
        # FAISS reports squared L2 and raw inner products; convert to "smaller is closer".
        if cosine:
            dist = 1.0 - raw
        else:
            dist = np.sqrt(np.maximum(raw, 0.0))
        dist = np.where(missing, np.inf, dist).astype(np.float32)
        return dist, rows.astype(np.int64)

    def _refined(self, modality, q, k, refine, cosine):
        """IVF-PQ candidates (k * refine per query) re-ranked by exact distance to the raw
        features (read by row, so a memory map stays on disk): FAISS's IndexRefineFlat,
        without a second float32 copy of the database."""
        _, rows_c = self.indexes[modality].search(q, k * refine)       # (Q, k r)
        x = self.features[modality]
        out_raw = np.empty((len(q), k), np.float32)
        out_rows = np.empty((len(q), k), np.int64)
        step = max(1, _REFINE_FLOATS // max(1, k * refine * q.shape[1]))
        for s0 in range(0, len(q), step):
            r = rows_c[s0:s0 + step]                                    # (c, k r)
            flat = np.maximum(r, 0).ravel()
            order = np.argsort(flat, kind="stable")                    # sorted reads of a map
            cand = np.empty((len(flat), q.shape[1]), np.float32)
            cand[order] = _as_float32_chunk(x[flat[order]], cosine)
            cand = cand.reshape(r.shape + (q.shape[1],))               # (c, k r, d)
            qq = q[s0:s0 + step, None, :]
            exact = (cand * qq).sum(-1) if cosine else ((cand - qq) ** 2).sum(-1)
            exact = np.where(r < 0, -np.inf if cosine else np.inf, exact)
            best = np.argsort(-exact if cosine else exact, axis=1, kind="stable")[:, :k]
            out_raw[s0:s0 + step] = np.take_along_axis(exact, best, 1)
            out_rows[s0:s0 + step] = np.take_along_axis(r, best, 1)
        return out_raw, out_rows

    def search(self, modality: str, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest database samples of each query in one modality.

        Parameters
        ----------
        modality : str
        queries : ndarray, shape (Q, d_m)
            Raw features (normalised here for a cosine modality).
        k : int

        Returns
        -------
        distances : ndarray of float32, shape (Q, k)
            L2 distance (``"l2"``) or ``1 - cos`` (``"cosine"``), ascending; inf where fewer
            than k results exist.
        ids : ndarray of int64, shape (Q, k)
            Global ids of the neighbours, -1 where fewer than k results exist.
        """
        dist, rows = self.search_rows(modality, queries, k)
        ids = np.where(rows >= 0, self.ids[np.maximum(rows, 0)], -1)
        return dist, ids

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write ``<dir>/database.json``, ``<dir>/ids.npy`` and one ``.faiss`` file per modality.

        The raw ``features`` are not written (they already live in the data set's files); pass
        them to :meth:`load` again when exact combined distances are needed.

        Returns
        -------
        Path
            The directory.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # Files named by position: a modality name need not be a valid file name.
        files = {m: f"index_{i:02d}.faiss" for i, m in enumerate(self.modalities)}
        for m, index in self.indexes.items():
            if _on_gpu(index):
                index = faiss.index_gpu_to_cpu(index)
            faiss.write_index(index, str(directory / files[m]))
        np.save(directory / "ids.npy", self.ids, allow_pickle=False)
        meta = {"format": _FORMAT, "version": _FORMAT_VERSION, "n": len(self),
                "modalities": list(self.modalities), "dims": self.dims, "metrics": self.metrics,
                "kind": self.kind, "params": self.params, "files": files,
                "faiss_version": faiss.__version__}
        (directory / "database.json").write_text(json.dumps(meta, indent=2) + "\n")
        return directory

    @classmethod
    @_keeps_torch_threads
    def load(cls, directory: str | Path, features: Mapping[str, np.ndarray] | None = None,
             n_threads: int | None = None) -> "FeatureDatabase":
        """Read a database written by :meth:`save`.

        Parameters
        ----------
        directory : str or Path
        features : dict of str -> ndarray (N, d_m), optional
            The raw features the database was built from, same row order; checked for shape.
        n_threads : int, optional

        Returns
        -------
        FeatureDatabase
        """
        directory = Path(directory)
        meta_path = directory / "database.json"
        if not meta_path.is_file():
            raise DataError("no feature database here (database.json missing)", file=directory)
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"not valid JSON: {e}", file=meta_path) from e
        if meta.get("format") != _FORMAT or meta.get("version") != _FORMAT_VERSION:
            raise DataError(f"expected format {_FORMAT!r} version {_FORMAT_VERSION}, found "
                            f"{meta.get('format')!r} version {meta.get('version')!r}",
                            file=meta_path, field="format")
        ids = np.load(directory / "ids.npy", allow_pickle=False).astype(np.int64)
        if ids.shape != (meta["n"],):
            raise DataError(f"expected {meta['n']} ids, found shape {ids.shape}",
                            file=directory / "ids.npy")
        faiss.omp_set_num_threads(resolve_threads(n_threads))
        indexes = {}
        for m in meta["modalities"]:
            path = directory / meta["files"][m]
            if not path.is_file():
                raise DataError(f"index file of modality {m!r} missing", file=path)
            index = faiss.read_index(str(path))
            if index.ntotal != meta["n"] or index.d != meta["dims"][m]:
                raise DataError(f"expected {meta['n']} vectors of dimension {meta['dims'][m]}, "
                                f"found {index.ntotal} of dimension {index.d}", file=path)
            # nprobe / efSearch are search-time settings: set them from the sidecar.
            _apply_search_params(index, meta["kind"], meta["params"])
            indexes[m] = index
        if features is not None:
            features = dict(features)
            for m in meta["modalities"]:
                x = features.get(m)
                if x is None or x.shape != (meta["n"], meta["dims"][m]):
                    raise ValueError(f"features[{m!r}] must have shape ({meta['n']}, "
                                     f"{meta['dims'][m]}) to match the saved database, got "
                                     f"{None if x is None else x.shape}.")
        return cls(indexes, ids, meta["metrics"], meta["kind"], meta["params"],
                   features=features, n_threads=n_threads)


# ---------------------------------------------------------------------- helpers
def gpu_faiss_available() -> bool:
    """Whether this FAISS has GPU support and sees a GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _on_gpu(index) -> bool:
    return type(index).__name__.startswith("Gpu")


def _to_gpu(indexes: dict, kind: str, gpu: int) -> dict:
    if kind == "hnsw":
        warnings.warn("FAISS has no GPU form of HNSW: its search stays on CPU", stacklevel=3)
        return indexes
    if not gpu_faiss_available():
        warnings.warn("this FAISS has no GPU support or sees no GPU (faiss-cpu): the feature "
                      "database searches on CPU; pip install a GPU build of FAISS (e.g. "
                      "faiss-gpu-cu12) for GPU search", stacklevel=3)
        return indexes
    res = faiss.StandardGpuResources()
    return {m: faiss.index_cpu_to_gpu(res, gpu, index) for m, index in indexes.items()}


def default_pq_m(d: int) -> int:
    """Bytes of a product-quantised vector: the largest divisor of ``d`` not above
    ``max(1, d // 8)`` (1024 -> 128: 32x less memory than float32)."""
    for m in range(max(1, d // 8), 0, -1):
        if d % m == 0:
            return m
    return 1


def _new_index(kind: str, d: int, cosine: bool, params: dict, modality: str) -> faiss.Index:
    metric = faiss.METRIC_INNER_PRODUCT if cosine else faiss.METRIC_L2
    if kind == "flat":
        return faiss.IndexFlatIP(d) if cosine else faiss.IndexFlatL2(d)
    if kind == "ivf":
        quantizer = faiss.IndexFlatIP(d) if cosine else faiss.IndexFlatL2(d)
        # faiss's Python wrapper keeps a reference to the quantizer on the index object.
        index = faiss.IndexIVFFlat(quantizer, d, params["nlist"], metric)
    elif kind == "ivfpq":
        quantizer = faiss.IndexFlatIP(d) if cosine else faiss.IndexFlatL2(d)
        index = faiss.IndexIVFPQ(quantizer, d, params["nlist"], params["pq_m"][modality], 8,
                                 metric)
    else:
        index = faiss.IndexHNSWFlat(d, params["hnsw_m"], metric)
        index.hnsw.efConstruction = params["ef_construction"]
    _apply_search_params(index, kind, params)
    return index


def _apply_search_params(index: faiss.Index, kind: str, params: dict) -> None:
    if kind in ("ivf", "ivfpq"):
        faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])
    elif kind == "hnsw":
        faiss.downcast_index(index).hnsw.efSearch = int(params["ef_search"])


def _check_ids(ids: np.ndarray, n: int) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.shape != (n,):
        raise ValueError(f"Expected ids of shape ({n},), one per feature row, got {ids.shape}.")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"Expected integer ids, got dtype {ids.dtype}.")
    ids = ids.astype(np.int64)
    if n and ids.min() < 0:
        raise ValueError("ids must be >= 0 (-1 marks 'no result').")
    if np.unique(ids).size != n:
        raise ValueError("ids must be unique.")
    return ids


def _check_metrics(metrics: Mapping[str, str] | None, modalities: tuple[str, ...]) -> dict:
    out = default_metrics(modalities)
    for m, v in (metrics or {}).items():
        if m not in modalities:
            raise ValueError(f"metrics names modality {m!r}, not in the features {modalities}.")
        if v not in METRICS:
            raise ValueError(f"Expected metric in {METRICS} for modality {m!r}, got {v!r}.")
        out[m] = v
    return out


def _check_finite(x: np.ndarray, modality: str, start: int = 0, what: str = "features") -> None:
    if not np.isfinite(x).all():
        bad = int(np.argwhere(~np.isfinite(x))[0, 0]) + start
        raise ValueError(f"{what}[{modality!r}] row {bad} holds NaN or inf; expected finite "
                         f"values.")
