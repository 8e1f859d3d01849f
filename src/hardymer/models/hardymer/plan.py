"""The curriculum plan of one fold under one training mask: hardness + support lists.

The teacher and the feature database are fixed, so the hardness of every training sample and
its ranked candidate supports depend only on (fold, training mask). They are computed once,
before training (spec §1.6), stored, and read by the training loop by global utterance id; no
FAISS search and no teacher forward happen inside a training step.

The ranked lists are kept full (k candidates); the support count ``k'`` is applied on top, so a
per-batch normalisation (reference option) can re-derive ``k'`` without searching again.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from ...fileio import atomic_path
from ...retrieval import FeatureDatabase, SupportLists, retrieve_supports, support_counts
from ...retrieval.supports import support_weights


@dataclass
class CurriculumPlan:
    """Per training utterance (Q rows, in training-sequence order).

    Attributes
    ----------
    ids : (Q,) int64 global utterance ids
    available : (Q, M) bool, the training mask the plan was made for
    h_dir_raw, h_ind_raw : (Q,) float64 raw hardness terms
    h_dir, h_ind : (Q,) float64 normalised terms in [0, 1]
    h : (Q,) float64 combined hardness in [0, 1]
    k_prime : (Q,) int64 number of supports
    support_ids : (Q, k) int64 ranked candidates (best first; -1 padding); the first
        ``k_prime`` are the support set S(x)
    support_dist : (Q, k) float32 combined distance s(c, x) of each candidate
    """

    ids: np.ndarray
    available: np.ndarray
    h_dir_raw: np.ndarray
    h_ind_raw: np.ndarray
    h_dir: np.ndarray
    h_ind: np.ndarray
    h: np.ndarray
    k_prime: np.ndarray
    support_ids: np.ndarray
    support_dist: np.ndarray

    @property
    def supports(self) -> SupportLists:
        """The support sets S(x) (candidates beyond ``k'`` masked out)."""
        keep = np.arange(self.support_ids.shape[1])[None, :] < self.k_prime[:, None]
        return SupportLists(np.where(keep, self.support_ids, -1),
                            np.where(keep, self.support_dist, np.inf).astype(np.float32),
                            self.k_prime, self.ids)

    def weights(self, n_total: int) -> np.ndarray:
        """``w_j = sum_{x : j in S(x)} 1/k'_x`` over all n_total utterances (spec §6)."""
        return support_weights(self.supports, n_total)

    def curriculum(self, variant: str = "paper", progress: float = 0.0, gamma: float = 1.0,
                   eta: float = 0.5) -> "CurriculumWeights":
        """The weights one epoch of the conditioned stage gives each query and its supports
        (:class:`CurriculumWeights`; ``progress`` in [0, 1] through the stage, for ``pace``)."""
        return curriculum_weights(self, variant, progress, gamma, eta)

    def row_of(self, n_total: int) -> np.ndarray:
        """(n_total,) int64: plan row of each global id, -1 for non-training utterances."""
        rows = np.full(n_total, -1, dtype=np.int64)
        rows[self.ids] = np.arange(len(self.ids))
        return rows

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            np.savez_compressed(tmp, **{f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def load(cls, path: Path) -> "CurriculumPlan":
        with np.load(path) as z:
            return cls(**{f.name: z[f.name] for f in fields(cls)})


VARIANTS = ("paper", "mass", "focus", "pace", "complete")


@dataclass
class CurriculumWeights:
    """What one epoch's objective gives each query x of a plan (Q rows, plan order)::

        L = sum_x own_x l(x) + lambda_sup sum_x pair_x sum_{j in S(x)} l(j)      (/ n)

    own : (Q,) weight of x's own loss: ``p_x (1 + gamma h_x)`` (focus) else ``p_x``
    pair : (Q,) weight of each of x's supports: ``p_x / k'_x`` (``p_x`` for mass)
    pace : (Q,) the pacing factor ``p_x`` (1 unless pace)
    """

    own: np.ndarray
    pair: np.ndarray
    pace: np.ndarray

    def help(self, plan: "CurriculumPlan", lambda_sup: float) -> np.ndarray:
        """(Q,) all the weight x's term hands out: ``own_x + lambda_sup k'_x pair_x`` — the
        paper's form gives every query ``1 + lambda_sup`` whatever its hardness."""
        return self.own + lambda_sup * plan.k_prime * self.pair

    def loss_weight(self, plan: "CurriculumPlan", lambda_sup: float) -> np.ndarray:
        """(Q,) the weight each training sample's own loss ends up with (own part plus every
        time it is someone's support): what the optimizer sees for that sample."""
        sup = plan.supports
        if not np.isin(sup.ids[sup.mask], plan.ids).all():
            raise ValueError("a support is not a row of its plan")
        n = int(max(plan.ids.max(initial=-1), sup.ids.max(initial=-1))) + 1
        return self.own + lambda_sup * support_weights(sup, n, self.pair)[plan.ids]


def curriculum_weights(plan: "CurriculumPlan", variant: str, progress: float, gamma: float,
                       eta: float) -> CurriculumWeights:
    """The variants of docs/hardymer.md ("Curriculum variants"):

    * ``paper``: own 1, each support ``1/k'`` (one unit per query, whatever its hardness);
    * ``mass``: each support weighs 1: a hard query's neighbourhood gets up to k times an easy
      one's;
    * ``focus``: the query's own loss scaled by ``1 + gamma h``;
    * ``pace``: the whole term of x scaled by ``p_x = 1 + eta (2 progress - 1)(2 h_x - 1)``:
      easy samples weigh ``1 + eta`` and hard ones ``1 - eta`` at the stage's first epoch,
      linearly the reverse by its last (easy-to-hard ordering, Bengio et al., ICML 2009,
      with a linear pacing function, Hacohen & Weinshall, ICML 2019; as soft weights);
    * ``complete``: the paper's weights; its help is a target, not a weight
      (:func:`neighbour_targets`).
    """
    if variant not in VARIANTS:
        raise ValueError(f"model.curriculum={variant!r}; expected one of {VARIANTS}")
    h = np.asarray(plan.h, np.float64)
    kp = plan.k_prime.astype(np.float64)
    pace = 1.0 + eta * (2.0 * progress - 1.0) * (2.0 * h - 1.0) if variant == "pace" \
        else np.ones_like(h)
    own = pace * (1.0 + gamma * h) if variant == "focus" else pace.copy()
    inv = np.divide(1.0, kp, out=np.zeros_like(kp), where=kp > 0)
    pair = pace * (np.where(kp > 0, 1.0, 0.0) if variant == "mass" else inv)
    return CurriculumWeights(own=own, pair=pair, pace=pace)


def neighbour_targets(plan: "CurriculumPlan", features: dict, n_total: int, k: int
                      ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The ``complete`` variant's extra reconstruction target: per training query x the mean
    of its supports' true features ``{m: (n_total, d_m)}`` (supports are complete samples, so
    every modality x misses is there), and its weight ``k'_x / k`` (n_total,): the more
    neighbours a hard query has, the more their consensus counts; 0 without supports."""
    sup = plan.supports
    mask = sup.mask.astype(np.float64)
    ids = np.maximum(sup.ids, 0)
    count = np.maximum(mask.sum(1, keepdims=True), 1.0)
    out = {}
    for m, f in features.items():
        x = np.asarray(f[ids.reshape(-1)], np.float64).reshape(*ids.shape, -1)   # (Q, k, d)
        t = np.zeros((n_total, x.shape[-1]), np.float32)
        t[plan.ids] = ((x * mask[..., None]).sum(1) / count).astype(np.float32)
        out[m] = t
    weight = np.zeros(n_total)
    weight[plan.ids] = plan.k_prime / float(k)
    return out, weight


def mask_digest(mask: np.ndarray) -> str:
    """A short stable name for a training mask (plans are cached by it)."""
    return hashlib.sha1(np.packbits(np.ascontiguousarray(mask)).tobytes()).hexdigest()[:12]


def rank_candidates(database: FeatureDatabase, features: dict[str, np.ndarray], ids: np.ndarray,
                    available: np.ndarray, k: int, ranking: str = "combined",
                    chunk: int = 65_536) -> SupportLists:
    """Full ranked candidate lists (k per query) of training queries under their masks,
    ``chunk`` queries at a time: each query's list depends on it alone, and a memory-mapped
    data set's query rows are never gathered whole."""
    parts = []
    for a in range(0, len(ids), chunk):
        q = ids[a:a + chunk]
        query = {m: features[m][q] for m in database.modalities}
        parts.append(retrieve_supports(database, query, q, available[a:a + chunk],
                                       hardness=1.0, k=k, ranking=ranking))
    if len(parts) == 1:
        return parts[0]
    return SupportLists(*(np.concatenate([getattr(p, f) for p in parts])
                          for f in ("ids", "distances", "k_prime", "query_ids")))


def build_plan(ids: np.ndarray, available: np.ndarray, terms_dir: np.ndarray,
               terms_ind: np.ndarray, normalised: tuple[np.ndarray, np.ndarray, np.ndarray],
               candidates: SupportLists | None, k: int, k_rule: str = "ceil",
               use_hardness: bool = True) -> CurriculumPlan:
    """Assemble a plan; ``k' = k`` for every sample when hardness is off (ablation w/o h)."""
    d, i, h = normalised
    kp = support_counts(h, k, k_rule) if use_hardness else np.full(len(ids), k, np.int64)
    if candidates is None:  # no retrieval: an empty plan that still records hardness
        sup = np.full((len(ids), k), -1, np.int64)
        dist = np.full((len(ids), k), np.inf, np.float32)
        kp = np.zeros(len(ids), np.int64)
    else:
        sup, dist = candidates.ids, candidates.distances
        kp = np.minimum(kp, (sup >= 0).sum(1))  # queries with no available modality: 0
    return CurriculumPlan(ids=ids.astype(np.int64), available=available.astype(bool),
                          h_dir_raw=np.asarray(terms_dir, np.float64),
                          h_ind_raw=np.asarray(terms_ind, np.float64), h_dir=d, h_ind=i, h=h,
                          k_prime=kp.astype(np.int64), support_ids=sup, support_dist=dist)


def first_plan_key(cell: Path) -> tuple[str, str] | None:
    """(epoch, plan key) of the cell's first conditioned epoch, None before it has one."""
    index = Path(cell) / "curriculum" / "epochs.json"
    if not index.is_file():
        return None
    epochs = json.loads(index.read_text())
    first = min(epochs, key=int)
    return first, epochs[first]


def first_plan(cell: Path) -> CurriculumPlan | None:
    """The plan of the cell's first conditioned epoch (the only one under a fixed condition)."""
    key = first_plan_key(cell)
    return None if key is None else \
        CurriculumPlan.load(Path(cell) / "curriculum" / f"plan-{key[1]}.npz")
