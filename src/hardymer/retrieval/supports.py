"""Dynamic retrieval: the support set S(x) of every query sample (spec §1.5, §6).

For a query sample x with available modalities M and hardness h in [0, 1]:

1. search the top ``k + 1`` database samples in each available modality (the ``+1`` leaves room
   to drop x itself when x is a database sample);
2. merge the lists, drop ``-1`` padding, x itself (by global id) and duplicates;
3. rank the candidates c by the combined distance over the available modalities,
   ``s(c, x) = (1/|M|) sum_{m in M} ||f_c^m - f_x^m||_2``, computed exactly from the raw stored
   feature vectors (not the index's cosine score, and not an approximate index's estimate);
4. keep the best ``k' = ceil(h k)`` (0 when h = 0, k when h = 1).

Everything is vectorised over queries: queries are grouped by availability pattern and each
modality's index is searched once for all queries of a pattern. Under a fixed condition the
support sets are computed once per fold and condition, before training (spec §1.6).

:func:`support_weights` turns support sets into the per-sample weights ``w_j`` of the
reweighting form of ``L_sup`` (spec §6).

Examples
--------
>>> import numpy as np
>>> from hardymer.retrieval import FeatureDatabase, retrieve_supports, support_weights
>>> rng = np.random.default_rng(0)
>>> feats = {m: rng.normal(size=(50, 4)).astype("float32") for m in "atv"}
>>> db = FeatureDatabase.build(feats)
>>> avail = np.ones((50, 3), bool); avail[:, 2] = False          # condition "at"
>>> lists = retrieve_supports(db, feats, np.arange(50), avail, hardness=np.linspace(0, 1, 50), k=3)
>>> lists.k_prime[[0, 1, 20, 49]].tolist()
[0, 1, 2, 3]
>>> bool((lists.ids != np.arange(50)[:, None]).all())               # never itself
True
>>> support_weights(lists, 50).shape
(50,)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from .index import FeatureDatabase

KRule = Literal["ceil", "floor+1"]
Ranking = Literal["combined", "merge-order"]
K_RULES = ("ceil", "floor+1")
RANKINGS = ("combined", "merge-order")
# The reference concatenates the per-modality lists audio, video, text (retrieval.py,
# search_and_integrate); the order matters for "merge-order" and breaks ties otherwise.
REFERENCE_MERGE_ORDER = ("a", "v", "t")
# h*k is computed in floating point: 0.7 * 10 = 7.000000000000001 would ceil to 8. Products
# within this tolerance of an integer count as that integer.
_INT_TOL = 1e-9
# Elements (queries x candidates x dim) of the float32 gather used for exact distances per step:
# 2**23 = 32 MiB, so 10k queries x 15 candidates x 1024 dims never materialise at once.
_GATHER_BUDGET = 1 << 23


@dataclass
class SupportLists:
    """The support sets of Q query samples, padded to a common width k.

    Attributes
    ----------
    ids : ndarray of int64, shape (Q, k)
        Global ids of the supports, best first; -1 after the first ``k_prime[q]`` entries.
    distances : ndarray of float32, shape (Q, k)
        Combined distance ``s(c, x)`` of each support (also under ``ranking="merge-order"``,
        where it does not set the order); inf at padding.
    k_prime : ndarray of int64, shape (Q,)
        Number of supports kept: ``k'`` of the rule, or fewer when the database holds fewer
        distinct candidates than that (only with tiny databases, N <= k).
    query_ids : ndarray of int64, shape (Q,), optional
        Global id of each query (used by :meth:`to_frame` and :meth:`label_agreement`).
    """

    ids: np.ndarray
    distances: np.ndarray
    k_prime: np.ndarray
    query_ids: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def k(self) -> int:
        """Width of the lists (the retrieval's k)."""
        return int(self.ids.shape[1])

    @property
    def mask(self) -> np.ndarray:
        """(Q, k) bool, True at real supports."""
        return self.ids >= 0

    def to_frame(self) -> pd.DataFrame:
        """One row per (query, support): ``query_id, rank, support_id, distance, k_prime``.

        Queries with ``k' = 0`` have no rows. ``query_id`` is the row number when the lists carry
        no ``query_ids``.
        """
        q, r = np.nonzero(self.mask)  # row-major: queries in order, ranks ascending
        qids = self.query_ids if self.query_ids is not None else np.arange(len(self))
        return pd.DataFrame({"query_id": qids[q], "rank": r.astype(np.int64),
                             "support_id": self.ids[q, r], "distance": self.distances[q, r],
                             "k_prime": self.k_prime[q]})

    def label_agreement(self, labels: np.ndarray,
                        query_labels: np.ndarray | None = None) -> np.ndarray:
        """Fraction of each query's supports that carry the query's label.

        Parameters
        ----------
        labels : ndarray, shape (n_total,)
            Labels indexed by global id (class ids; discretise regression targets first).
        query_labels : ndarray, shape (Q,), optional
            Default ``labels[query_ids]``.

        Returns
        -------
        ndarray of float64, shape (Q,)
            In [0, 1]; NaN where the query has no supports.
        """
        labels = np.asarray(labels)
        if query_labels is None:
            if self.query_ids is None:
                raise ValueError("These lists carry no query_ids: pass query_labels (Q,).")
            query_labels = labels[self.query_ids]
        query_labels = np.asarray(query_labels)
        if query_labels.shape != (len(self),):
            raise ValueError(f"Expected query_labels of shape ({len(self)},), got "
                             f"{query_labels.shape}.")
        mask = self.mask
        same = (labels[np.where(mask, self.ids, 0)] == query_labels[:, None]) & mask  # (Q, k)
        n = mask.sum(axis=1)
        out = np.full(len(self), np.nan)
        np.divide(same.sum(axis=1), n, out=out, where=n > 0)
        return out


def support_counts(hardness: np.ndarray | float, k: int, rule: KRule = "ceil") -> np.ndarray:
    """Number of supports ``k'`` for hardness ``h`` (clipped to [0, 1]).

    Parameters
    ----------
    hardness : float or ndarray, shape (Q,)
    k : int
    rule : {"ceil", "floor+1"}
        ``"ceil"`` (paper, default): ``k' = ceil(h k)``; 0 at h = 0, k at h = 1.
        ``"floor+1"`` (reference code, ``utils.secondary_filtering`` with ``min_k = 1``):
        ``k' = floor(h k) + 1``, capped at k. The reference's h lies in [0.5, 0.98] (a sigmoid),
        so it never reaches the cap and every sample gets at least one support.

    Returns
    -------
    ndarray of int64, shape (Q,) (or () for a scalar)
    """
    if rule not in K_RULES:
        raise ValueError(f"Expected k_rule in {K_RULES}, got {rule!r}.")
    hk = np.clip(np.asarray(hardness, dtype=np.float64), 0.0, 1.0) * k
    if rule == "ceil":
        kp = np.ceil(hk - _INT_TOL)
    else:
        kp = np.minimum(np.floor(hk + _INT_TOL) + 1, k)
    return np.maximum(kp, 0).astype(np.int64)


def retrieve_supports(database: FeatureDatabase, query_features: Mapping[str, np.ndarray],
                      query_ids: np.ndarray, available: np.ndarray,
                      hardness: np.ndarray | float, k: int = 3, *,
                      features: Mapping[str, np.ndarray] | None = None, k_rule: KRule = "ceil",
                      ranking: Ranking = "combined",
                      merge_order: Sequence[str] = REFERENCE_MERGE_ORDER) -> SupportLists:
    """Support sets S(x) of Q query samples (spec §1.5).

    Parameters
    ----------
    database : FeatureDatabase
        Indexes over the fold's complete training samples.
    query_features : dict of str -> ndarray, shape (Q, d_m)
        Raw features of the queries, aligned with ``query_ids``. Only rows where the modality is
        available are read; a modality never available may be left out of the dict.
    query_ids : ndarray of int, shape (Q,)
        Global ids of the queries: a database sample with the same id is never its own support.
    available : ndarray of bool, shape (Q, M)
        Available modalities of each query, columns in ``database.modalities`` order. Missing
        modalities are neither searched nor part of the combined distance.
    hardness : float or ndarray, shape (Q,)
        h in [0, 1] (clipped); sets k' via ``k_rule``.
    k : int
        Maximal number of supports; each available modality is searched for its top ``k + 1``.
    features : dict of str -> ndarray (N, d_m), optional
        Raw database features in database row order; default ``database.features``. The
        combined distance is computed from these, exactly, whatever the index metric or kind.
    k_rule : {"ceil", "floor+1"}
        See :func:`support_counts`; ``"floor+1"`` is the reference code's rule.
    ranking : {"combined", "merge-order"}
        ``"combined"`` (paper, default): candidates sorted by ``s(c, x)``, ties broken by merge
        order. ``"merge-order"`` (reference code, ``retrieval.search_and_integrate`` +
        ``integrated_features``): candidates taken in the order of the concatenated
        per-modality lists (``merge_order``, each list best first), deduplicated; the reference
        computes the combined distance but keeps every candidate, so the distance does not
        affect which are kept. (The reference assumes the first merged entry is the query
        itself; here the query is removed by id, wherever it appears.)
    merge_order : sequence of str
        Order in which the per-modality lists are concatenated; database modalities not named
        follow in database order. Default a, v, t as in the reference.

    Returns
    -------
    SupportLists
        ``ids`` (Q, k), ``distances`` (Q, k), ``k_prime`` (Q,), ``query_ids`` (Q,). A query with
        no available modality, or with h = 0 under ``"ceil"``, gets ``k' = 0``.
    """
    mods = database.modalities
    n_mod = len(mods)
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}.")
    if k_rule not in K_RULES:
        raise ValueError(f"Expected k_rule in {K_RULES}, got {k_rule!r}.")
    if ranking not in RANKINGS:
        raise ValueError(f"Expected ranking in {RANKINGS}, got {ranking!r}.")
    query_ids = np.asarray(query_ids)
    if query_ids.ndim != 1 or not np.issubdtype(query_ids.dtype, np.integer):
        raise ValueError(f"Expected integer query_ids of shape (Q,), got {query_ids.dtype} "
                         f"{query_ids.shape}.")
    query_ids = query_ids.astype(np.int64)
    n_q = query_ids.shape[0]
    available = np.asarray(available)
    if available.shape != (n_q, n_mod):
        raise ValueError(f"Expected available of shape (Q={n_q}, M={n_mod}) with columns "
                         f"{mods}, got {available.shape}.")
    if available.dtype != bool:
        if not np.isin(available, (0, 1)).all():
            raise ValueError(f"Expected a bool (or 0/1) availability mask, got {available.dtype}.")
        available = available.astype(bool)
    hardness = np.asarray(hardness, dtype=np.float64)
    if hardness.shape not in ((), (n_q,)):
        raise ValueError(f"Expected hardness as a float or shape ({n_q},), got {hardness.shape}.")
    hardness = np.broadcast_to(hardness, (n_q,))
    if not np.isfinite(hardness).all():
        raise ValueError("hardness holds NaN or inf; expected values in [0, 1].")
    feats = database.features if features is None else dict(features)
    if feats is None:
        raise ValueError("The database carries no raw features (loaded from disk?): pass "
                         "features= (the (N, d_m) matrices it was built from).")
    for j, m in enumerate(mods):
        x = feats.get(m)
        if x is None or x.shape != (len(database), database.dims[m]):
            raise ValueError(f"features[{m!r}] must have shape ({len(database)}, "
                             f"{database.dims[m]}), got {None if x is None else x.shape}.")
        if available[:, j].any():
            q = query_features.get(m)
            if q is None or q.shape != (n_q, database.dims[m]):
                raise ValueError(f"query_features[{m!r}] must have shape ({n_q}, "
                                 f"{database.dims[m]}) (the modality is available for some "
                                 f"queries), got {None if q is None else q.shape}.")
    order = [m for m in merge_order if m in mods] + [m for m in mods if m not in merge_order]

    k_target = support_counts(hardness, k, k_rule)
    k_target[~available.any(axis=1)] = 0
    out_ids = np.full((n_q, k), -1, dtype=np.int64)
    out_dist = np.full((n_q, k), np.inf, dtype=np.float32)
    out_kp = np.zeros(n_q, dtype=np.int64)

    # One code per availability pattern (bit j = modality j), so each pattern's queries are
    # searched together; queries that keep no support are not searched at all.
    codes = available.astype(np.int64) @ (1 << np.arange(n_mod, dtype=np.int64))
    codes = np.where(k_target > 0, codes, 0)
    for code in np.unique(codes[codes > 0]):
        qi = np.flatnonzero(codes == code)  # (Qp,)
        present = [m for m in order if code >> mods.index(m) & 1]
        rows = np.concatenate([database.search_rows(m, query_features[m][qi], k + 1)[1]
                               for m in present], axis=1)  # (Qp, C), C = |M| (k + 1)
        ids, dist, kept = _rank_candidates(database, feats, query_features, present, qi,
                                           query_ids[qi], rows, k_target[qi], k, ranking)
        out_ids[qi], out_dist[qi], out_kp[qi] = ids, dist, kept
    return SupportLists(out_ids, out_dist, out_kp, query_ids)


def _rank_candidates(database, feats, query_features, present, qi, qids, rows, k_target, k,
                     ranking):
    """Merge, clean and rank the candidate rows (Qp, C) of one availability pattern.

    Returns ids (Qp, k), distances (Qp, k), kept counts (Qp,).
    """
    n_p, n_c = rows.shape
    valid = rows >= 0
    cand_ids = np.where(valid, database.ids[np.maximum(rows, 0)], -1)  # (Qp, C)
    valid &= cand_ids != qids[:, None]
    # Duplicates: after a stable sort of each list, an entry equal to its predecessor repeats an
    # earlier list position, so the first occurrence (merge order) is the one kept.
    srt = np.argsort(rows, axis=1, kind="stable")  # (Qp, C)
    rows_sorted = np.take_along_axis(rows, srt, axis=1)
    repeat_sorted = np.zeros_like(valid)
    repeat_sorted[:, 1:] = rows_sorted[:, 1:] == rows_sorted[:, :-1]
    repeat = np.empty_like(valid)
    np.put_along_axis(repeat, srt, repeat_sorted, axis=1)
    valid &= ~repeat

    s = _combined_distance(feats, query_features, present, qi, rows, valid)  # (Qp, C)
    if ranking == "combined":
        key = s
    else:
        key = np.where(valid, np.arange(n_c, dtype=np.float64), np.inf)
    # Stable: equal keys stay in merge order. Invalid candidates (key inf) sort last.
    best = np.argsort(key, axis=1, kind="stable")[:, :k]  # (Qp, k), C >= k + 1 > k
    n_valid = valid.sum(axis=1)
    kept = np.minimum(k_target, n_valid)
    keep = np.arange(k)[None, :] < kept[:, None]  # (Qp, k)
    ids = np.where(keep, np.take_along_axis(cand_ids, best, axis=1), -1)
    dist = np.where(keep, np.take_along_axis(s, best, axis=1), np.inf).astype(np.float32)
    return ids, dist, kept


def _combined_distance(feats, query_features, present, qi, rows, valid):
    """``s(c, x) = mean over present modalities of ||f_c - f_x||_2`` (Qp, C); inf where invalid.

    Gathers candidate feature rows in query chunks so that (queries x C x d) stays within
    ``_GATHER_BUDGET`` elements (memory maps are read row by row, never whole).
    """
    n_p, n_c = rows.shape
    safe = np.where(valid, rows, 0)
    total = np.zeros((n_p, n_c), dtype=np.float64)
    for m in present:
        f_db, f_q = feats[m], query_features[m]
        d = f_db.shape[1]
        step = max(1, _GATHER_BUDGET // (n_c * d))
        for a in range(0, n_p, step):
            r = safe[a:a + step]  # (q, C)
            cand = np.asarray(f_db[r.ravel()], dtype=np.float32).reshape(*r.shape, d)  # (q, C, d)
            x = np.asarray(f_q[qi[a:a + step]], dtype=np.float32)  # (q, d)
            diff = cand - x[:, None, :]  # (q, C, d)
            total[a:a + step] += np.sqrt(np.einsum("qcd,qcd->qc", diff, diff))
    s = total / len(present)
    s[~valid] = np.inf
    return s


def support_weights(lists: SupportLists, n_total: int,
                    per_query: np.ndarray | None = None) -> np.ndarray:
    """Per-sample weights of the reweighting form of ``L_sup`` (spec §6).

    ``w_j = sum over queries x with j in S(x) of 1 / k'_x``: under a fixed condition,
    ``sum_x (1/k'_x) sum_{j in S(x)} l_j = sum_j w_j l_j``.

    Parameters
    ----------
    lists : SupportLists
    n_total : int
        Length of the weight vector; support ids index it.
    per_query : ndarray of float, shape (Q,), optional
        The weight each of query x's supports gets instead of ``1 / k'_x``.

    Returns
    -------
    ndarray of float64, shape (n_total,)
    """
    mask = lists.mask
    ids = lists.ids[mask]
    if ids.size and ids.max() >= n_total:
        raise ValueError(f"Support id {int(ids.max())} does not fit n_total={n_total}.")
    if per_query is None:
        per_query = np.zeros(len(lists))
        np.divide(1.0, lists.k_prime, out=per_query, where=lists.k_prime > 0)
    per_entry = np.broadcast_to(np.asarray(per_query, np.float64)[:, None], mask.shape)[mask]
    return np.bincount(ids, weights=per_entry, minlength=n_total).astype(np.float64)
