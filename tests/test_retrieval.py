"""Feature database (FAISS) and dynamic support retrieval, checked against plain numpy."""
import math

import numpy as np
import pytest

from hardymer.retrieval import (FeatureDatabase, SupportLists, retrieve_supports, support_counts,
                                support_weights)

MODS = ("a", "t", "v")


def random_features(n=200, dims=(6, 10, 8), seed=0):
    rng = np.random.default_rng(seed)
    return {m: rng.normal(size=(n, d)).astype(np.float32) for m, d in zip(MODS, dims)}


def clustered(n=3000, d=32, n_clusters=30, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_clusters, d)) * 4
    x = centers[rng.integers(0, n_clusters, n)] + rng.normal(size=(n, d))
    return x.astype(np.float32)


def brute_distances(db_x, q_x, metric):
    """(Q, N) distances in float64: L2, or 1 - cos."""
    db_x, q_x = db_x.astype(np.float64), q_x.astype(np.float64)
    if metric == "cosine":
        a = q_x / np.linalg.norm(q_x, axis=1, keepdims=True)
        b = db_x / np.linalg.norm(db_x, axis=1, keepdims=True)
        return 1.0 - a @ b.T
    return np.sqrt(((q_x[:, None, :] - db_x[None, :, :]) ** 2).sum(-1))


def brute_supports(feats, ids, q_feats, q_ids, available, hardness, k, metrics,
                   ranking="combined", k_rule="ceil", order=("a", "v", "t")):
    """The plain path: one query at a time, Python lists and sets."""
    out = []
    for q in range(len(q_ids)):
        present = [m for m in order if available[q, MODS.index(m)]]
        cands = []
        for m in present:
            d = brute_distances(feats[m], q_feats[m][q:q + 1], metrics[m])[0]
            cands += list(ids[np.argsort(d, kind="stable")[:k + 1]])
        seen, merged = set(), []
        for c in cands:
            if c != q_ids[q] and c not in seen:
                seen.add(c)
                merged.append(c)
        row = {c: i for i, c in enumerate(ids)}
        dist = {c: np.mean([np.linalg.norm(feats[m][row[c]].astype(np.float64)
                                           - q_feats[m][q].astype(np.float64)) for m in present])
                for c in merged}
        if ranking == "combined":
            merged = sorted(merged, key=lambda c: dist[c])
        h = min(max(hardness[q], 0.0), 1.0)
        hk = round(h * k, 9)  # 0.7 * 10 -> 7, not 7.000000000000001
        kp = math.ceil(hk) if k_rule == "ceil" else min(math.floor(hk) + 1, k)
        kp = 0 if not present else kp
        out.append(([int(c) for c in merged[:kp]], [dist[c] for c in merged[:kp]]))
    return out


def assert_matches_brute(lists, brute):
    for q, (ids, dists) in enumerate(brute):
        assert lists.k_prime[q] == len(ids)
        assert lists.ids[q, :len(ids)].tolist() == ids
        assert (lists.ids[q, len(ids):] == -1).all()
        np.testing.assert_allclose(lists.distances[q, :len(ids)], dists, rtol=1e-4, atol=1e-5)
        assert np.isinf(lists.distances[q, len(ids):]).all()


# ---------------------------------------------------------------------------- index
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_flat_search_equals_brute_force(metric):
    feats = random_features(n=300)
    ids = np.arange(300) * 7 + 5
    db = FeatureDatabase.build(feats, ids, metrics={m: metric for m in MODS})
    q = np.random.default_rng(1).normal(size=(40, 10)).astype(np.float32)
    dist, got = db.search("t", q, k=5)
    ref = brute_distances(feats["t"], q, metric)
    order = np.argsort(ref, axis=1)[:, :5]
    assert got.dtype == np.int64 and dist.dtype == np.float32
    np.testing.assert_array_equal(got, ids[order])
    np.testing.assert_allclose(dist, np.take_along_axis(ref, order, 1), rtol=1e-4, atol=1e-5)


def test_default_metrics_and_padding():
    feats = random_features(n=4)
    db = FeatureDatabase.build(feats)
    assert db.metrics == {"a": "l2", "t": "cosine", "v": "l2"}
    assert db.modalities == MODS and len(db) == 4 and db.dims == {"a": 6, "t": 10, "v": 8}
    dist, ids = db.search("a", feats["a"][:2], k=6)  # more than N: padded
    assert (ids[:, 4:] == -1).all() and np.isinf(dist[:, 4:]).all()
    assert ids[0, 0] == 0 and dist[0, 0] == pytest.approx(0, abs=1e-5)


@pytest.mark.parametrize("kind,extra", [("ivf", {"nprobe": 8}), ("hnsw", {"ef_search": 64}),
                                        ("ivfpq", {"nprobe": 8})])   # measured: 1.0 / 0.97
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_approximate_recall(kind, extra, metric):
    x = clustered()
    # Queries near database points (perturbed copies), as in retrieval over the training set.
    q = x[np.random.default_rng(2).choice(len(x), 200, replace=False)] \
        + np.random.default_rng(3).normal(size=(200, x.shape[1])).astype(np.float32) * 0.3
    k = 10
    flat = FeatureDatabase.build({"a": x}, metrics={"a": metric})
    approx = FeatureDatabase.build({"a": x}, metrics={"a": metric}, kind=kind, seed=0, **extra)
    _, ref = flat.search("a", q, k)
    _, got = approx.search("a", q, k)
    recall = np.mean([len(set(r) & set(g)) / k for r, g in zip(ref, got)])
    assert recall >= 0.9, recall


def test_ivf_is_seeded():
    x = clustered(n=2000)
    a = FeatureDatabase.build({"a": x}, kind="ivf", nprobe=2, seed=3)
    b = FeatureDatabase.build({"a": x}, kind="ivf", nprobe=2, seed=3)
    np.testing.assert_array_equal(a.search("a", x[:50], 5)[1], b.search("a", x[:50], 5)[1])


def test_ivf_training_sample_budget(monkeypatch):
    from hardymer.retrieval.index import ivf_train_size
    # 256 points per list, cut to the budget (float32 rows of d), never below 39 per list (or
    # 39 x 256 for PQ codebooks), never above N; None: the uncapped rule.
    assert ivf_train_size(10 ** 6, 1024, 4000, "ivfpq", None) == 10 ** 6
    assert ivf_train_size(10 ** 6, 1024, 4000, "ivfpq", 256.0) == 39 * 4000
    assert ivf_train_size(10 ** 6, 1024, 100, "ivf", 256.0) == 256 * 100
    assert ivf_train_size(10 ** 6, 1024, 1000, "ivf", 256.0) == 65_536
    assert ivf_train_size(10 ** 6, 1024, 100, "ivfpq", 1.0) == 39 * 256
    assert ivf_train_size(500, 8, 10, "ivf", None) == 500
    import faiss
    seen = []
    real = faiss.IndexIVFFlat.train
    monkeypatch.setattr(faiss.IndexIVFFlat, "train",
                        lambda self, x: (seen.append(x.shape), real(self, x))[1])
    x = clustered(n=3000, d=32)
    # nlist 10: uncapped 2,560 rows; 0.1 MiB of 32 floats is 819 rows (above the 390 floor).
    capped = FeatureDatabase.build({"a": x}, kind="ivf", nlist=10, nprobe=10, train_mb=0.1)
    FeatureDatabase.build({"a": x}, kind="ivf", nlist=10, train_mb=None)
    assert seen == [(819, 32), (2560, 32)]
    assert capped.params["train_mb"] == 0.1
    # every list probed: exact whatever the centroids
    np.testing.assert_array_equal(capped.search("a", x[:30], 5)[1],
                                  FeatureDatabase.build({"a": x}).search("a", x[:30], 5)[1])
    with pytest.raises(ValueError, match="train_mb"):
        FeatureDatabase.build({"a": x}, kind="ivf", train_mb=0)


def test_build_from_memmap(tmp_path):
    feats = random_features(n=150)
    mm = {}
    for m, x in feats.items():
        path = tmp_path / f"{m}.f32"
        x.tofile(path)
        mm[m] = np.memmap(path, dtype=np.float32, mode="r", shape=x.shape)
    # Small chunks: the database is built across several add() steps from read-only maps.
    db = FeatureDatabase.build(mm, chunk_rows=64)
    ref = FeatureDatabase.build(feats)
    for m in MODS:
        for got, want in zip(db.search(m, feats[m][:20], 4), ref.search(m, feats[m][:20], 4)):
            np.testing.assert_array_equal(got, want)
    q = {m: x[:20] for m, x in feats.items()}
    lists = retrieve_supports(db, q, np.arange(20), np.ones((20, 3), bool), 1.0, k=3)
    assert (lists.k_prime == 3).all()


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_save_load_round_trip(tmp_path, kind):
    feats = random_features(n=400)
    ids = np.arange(400) + 10_000
    db = FeatureDatabase.build(feats, ids, kind=kind, nlist=8, nprobe=3, ef_search=20)
    db.save(tmp_path / "db")
    assert not list((tmp_path / "db").glob("*.pkl"))
    back = FeatureDatabase.load(tmp_path / "db", features=feats)
    assert back.modalities == db.modalities and back.metrics == db.metrics
    assert back.kind == kind and back.params == db.params
    np.testing.assert_array_equal(back.ids, ids)
    for m in MODS:
        for got, want in zip(back.search(m, feats[m][:30], 5), db.search(m, feats[m][:30], 5)):
            np.testing.assert_array_equal(got, want)
    avail, q = np.ones((30, 3), bool), {m: x[:30] for m, x in feats.items()}
    a = retrieve_supports(db, q, ids[:30], avail, 1.0)
    b = retrieve_supports(back, q, ids[:30], avail, 1.0)
    np.testing.assert_array_equal(a.ids, b.ids)
    # Without the raw features the exact combined distance cannot be computed: say so.
    with pytest.raises(ValueError, match="features="):
        retrieve_supports(FeatureDatabase.load(tmp_path / "db"), q, ids[:30], avail, 1.0)


def test_rows_of_and_validation():
    feats = random_features(n=10)
    db = FeatureDatabase.build(feats, ids=np.arange(10)[::-1] * 3)
    assert db.rows_of([27, 0, 5]).tolist() == [0, 9, -1]
    with pytest.raises(ValueError, match="unique"):
        FeatureDatabase.build(feats, ids=np.zeros(10, int))
    with pytest.raises(ValueError, match="same N rows"):
        FeatureDatabase.build({"a": feats["a"], "t": feats["t"][:5]})
    with pytest.raises(ValueError, match=r"shape \(Q, 10\)"):
        db.search("t", feats["a"], 3)
    with pytest.raises(ValueError, match="metric"):
        FeatureDatabase.build(feats, metrics={"a": "dot"})


# ---------------------------------------------------------------------------- k'
def test_support_counts_ceil():
    assert support_counts(np.array([0.0, 1.0, 0.34, 1 / 3, 0.5, -0.2, 1.7]), 3).tolist() \
        == [0, 3, 2, 1, 2, 0, 3]
    # 0.7 * 10 = 7.000000000000001 in floating point: still 7 supports.
    assert support_counts(0.7, 10) == 7


def test_support_counts_floor_plus_one():
    assert support_counts(np.array([0.0, 0.34, 0.5, 0.98, 1.0]), 3, "floor+1").tolist() \
        == [1, 2, 2, 3, 3]
    with pytest.raises(ValueError, match="k_rule"):
        support_counts(0.5, 3, "round")


# ---------------------------------------------------------------------------- supports
def setup_supports(n=120, n_q=60, seed=0, metrics=None):
    feats = random_features(n=n, seed=seed)
    ids = np.arange(n) * 2 + 1  # global ids distinct from row numbers
    db = FeatureDatabase.build(feats, ids, metrics=metrics)
    rng = np.random.default_rng(seed + 1)
    available = rng.random((n_q, 3)) < 0.6
    available[:5] = [True, False, False]
    available[5:8] = False  # nothing available
    hardness = rng.random(n_q)
    hardness[[8, 9]] = [0.0, 1.0]
    q = np.arange(n_q)
    return db, feats, ids, {m: f[q] for m, f in feats.items()}, ids[q], available, hardness


@pytest.mark.parametrize("k_rule", ["ceil", "floor+1"])
@pytest.mark.parametrize("ranking", ["combined", "merge-order"])
def test_supports_equal_brute_force(ranking, k_rule):
    db, feats, ids, qf, qids, avail, h = setup_supports()
    lists = retrieve_supports(db, qf, qids, avail, h, k=4, ranking=ranking, k_rule=k_rule)
    assert lists.ids.shape == (60, 4) and lists.ids.dtype == np.int64
    assert lists.distances.dtype == np.float32 and lists.k_prime.dtype == np.int64
    brute = brute_supports(feats, ids, qf, qids, avail, h, 4, db.metrics, ranking, k_rule)
    assert_matches_brute(lists, brute)


def test_self_excluded_and_no_duplicates():
    db, feats, ids, qf, qids, avail, h = setup_supports()
    lists = retrieve_supports(db, qf, qids, np.ones_like(avail), 1.0, k=5)
    assert (lists.ids != qids[:, None]).all()
    for row in lists.ids:
        assert len(set(row[row >= 0])) == (row >= 0).sum() == 5


def test_duplicates_merged_across_modalities():
    # Identical features in every modality: the three lists are the same k + 1 samples, so the
    # merged candidates are just those, once each (minus the query itself).
    x = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    feats = {m: x for m in MODS}
    db = FeatureDatabase.build(feats, metrics={m: "l2" for m in MODS})
    lists = retrieve_supports(db, feats, np.arange(50), np.ones((50, 3), bool), 1.0, k=3)
    d = brute_distances(x, x, "l2")
    np.fill_diagonal(d, np.inf)
    np.testing.assert_array_equal(lists.ids, np.argsort(d, axis=1)[:, :3])
    for row in lists.ids:
        assert len(set(row)) == 3


def test_query_not_in_database_keeps_all_candidates():
    db, feats, ids, qf, qids, avail, h = setup_supports()
    q = {m: f + 0.01 for m, f in qf.items()}
    lists = retrieve_supports(db, q, np.full(60, 10**6), np.ones_like(avail), 1.0, k=3)
    # The nearest sample is now the (perturbed) original: it is a support, not removed.
    np.testing.assert_array_equal(lists.ids[:, 0], qids)


def test_only_available_modalities_are_searched():
    db, feats, ids, qf, qids, avail, h = setup_supports()
    base = retrieve_supports(db, qf, qids, avail, h, k=4)
    rng = np.random.default_rng(9)
    for j, m in enumerate(MODS):
        changed = dict(qf)
        changed[m] = qf[m].copy()
        changed[m][~avail[:, j]] = rng.normal(size=changed[m][~avail[:, j]].shape) * 100
        changed[m][np.flatnonzero(~avail[:, j])[:1]] = np.nan  # never even read
        got = retrieve_supports(db, changed, qids, avail, h, k=4)
        np.testing.assert_array_equal(got.ids, base.ids)
        np.testing.assert_array_equal(got.distances, base.distances)
    # A modality no query has may be left out of the query dict.
    only_a = np.zeros_like(avail)
    only_a[:, 0] = True
    retrieve_supports(db, {"a": qf["a"]}, qids, only_a, h, k=4)


def test_no_available_modality_and_zero_hardness_give_empty_lists():
    db, feats, ids, qf, qids, avail, h = setup_supports()
    lists = retrieve_supports(db, qf, qids, avail, h, k=3)
    for q in [5, 6, 7, 8]:  # 5-7: nothing available; 8: h = 0
        assert lists.k_prime[q] == 0 and (lists.ids[q] == -1).all()
    assert lists.k_prime[9] == 3


def test_approximate_index_still_ranks_by_exact_distance():
    feats = {"a": clustered(n=1500, d=16)}
    db = FeatureDatabase.build(feats, kind="hnsw")
    lists = retrieve_supports(db, {"a": feats["a"][:50]}, np.arange(50), np.ones((50, 1), bool),
                              1.0, k=3)
    exact = brute_distances(feats["a"], feats["a"][:50], "l2")
    np.testing.assert_allclose(lists.distances,
                               np.take_along_axis(exact, lists.ids, axis=1), rtol=1e-4, atol=1e-4)
    assert (np.diff(lists.distances, axis=1) >= 0).all()


def test_support_weights_hand_count():
    lists = SupportLists(ids=np.array([[3, 1, -1], [1, -1, -1], [-1, -1, -1], [0, 1, 3]]),
                         distances=np.zeros((4, 3), np.float32),
                         k_prime=np.array([2, 1, 0, 3]))
    w = support_weights(lists, 5)
    np.testing.assert_allclose(w, [1 / 3, 1 / 2 + 1 + 1 / 3, 0, 1 / 2 + 1 / 3, 0])
    # The reweighting identity of spec §6 on arbitrary per-sample losses.
    loss = np.array([0.3, 1.2, 0.7, 2.0, 0.1])
    explicit = sum(loss[r[r >= 0]].sum() / kp for r, kp in zip(lists.ids, lists.k_prime) if kp)
    assert explicit == pytest.approx((w * loss).sum())


def test_frame_and_label_agreement():
    db, feats, ids, qf, qids, avail, h = setup_supports()
    lists = retrieve_supports(db, qf, qids, avail, h, k=3)
    frame = lists.to_frame()
    assert list(frame.columns) == ["query_id", "rank", "support_id", "distance", "k_prime"]
    assert len(frame) == lists.k_prime.sum()
    labels = np.zeros(ids.max() + 1, int)
    labels[ids] = np.arange(len(ids)) % 3
    agree = lists.label_agreement(labels)
    want = [np.mean(labels[r[r >= 0]] == labels[q]) if (r >= 0).any() else np.nan
            for r, q in zip(lists.ids, qids)]
    np.testing.assert_allclose(agree, want)


def test_retrieval_validation():
    db, feats, ids, qf, qids, avail, h = setup_supports()
    with pytest.raises(ValueError, match=r"available of shape"):
        retrieve_supports(db, qf, qids, avail[:, :2], h)
    with pytest.raises(ValueError, match="query_features\\['t'\\]"):
        retrieve_supports(db, {"a": qf["a"], "v": qf["v"]}, qids, np.ones_like(avail), h)
    with pytest.raises(ValueError, match="ranking"):
        retrieve_supports(db, qf, qids, avail, h, ranking="random")


def test_rankings_differ_on_random_data():
    # Guards the brute-force comparison above: the two rankings must be distinguishable here.
    db, feats, ids, qf, qids, avail, h = setup_supports()
    a = retrieve_supports(db, qf, qids, avail, h, k=4)
    b = retrieve_supports(db, qf, qids, avail, h, k=4, ranking="merge-order")
    assert (a.ids != b.ids).any()
    np.testing.assert_array_equal(a.k_prime, b.k_prime)


def test_a_search_leaves_torchs_thread_count_alone():
    # FAISS and torch share OpenMP: a small search used to drop torch to one thread for good.
    import torch
    before = torch.get_num_threads()
    rng = np.random.default_rng(0)
    db = FeatureDatabase.build({"a": rng.standard_normal((50, 4)).astype(np.float32)})
    db.search_rows("a", rng.standard_normal((3, 4)), 2)        # < 1024 queries: one thread
    assert torch.get_num_threads() == before


def test_ivfpq_reranks_exactly_and_auto_picks_by_size(monkeypatch):
    """IVF-PQ's codes alone find a fraction of the true neighbours; re-ranked over 8 x k
    candidates by exact distance (the raw features at hand) it finds nearly all, with exact
    distances. ``auto`` is exact up to AUTO_EXACT_UP_TO vectors, IVF-PQ above."""
    import hardymer.retrieval.index as index_mod
    x = clustered()
    q = x[:200] + np.random.default_rng(3).normal(size=(200, x.shape[1])).astype(np.float32) * .3
    flat = FeatureDatabase.build({"a": x})
    ref_d, ref = flat.search("a", q, 10)

    def recall(db):
        return np.mean([len(set(r) & set(g)) / 10 for r, g in zip(ref, db.search("a", q, 10)[1])])
    coded = FeatureDatabase.build({"a": x}, kind="ivfpq", refine=1)
    reranked = FeatureDatabase.build({"a": x}, kind="ivfpq")
    assert coded.params["pq_m"] == {"a": 4} and reranked.params["refine"] == 8
    assert recall(coded) < 0.8 < 0.95 < recall(reranked)       # measured 0.61 / 1.0
    d, ids = reranked.search("a", q, 10)
    np.testing.assert_allclose(d, np.linalg.norm(x[ids] - q[:, None], axis=-1), rtol=1e-4)
    assert FeatureDatabase.build({"a": x}, kind="auto").kind == "flat"
    monkeypatch.setattr(index_mod, "AUTO_EXACT_UP_TO", 1000)
    auto = FeatureDatabase.build({"a": x}, kind="auto")
    assert auto.kind == "ivfpq" and recall(auto) > 0.95
    with pytest.raises(ValueError, match="pq_m=5 must divide modality 'a'"):
        FeatureDatabase.build({"a": x}, kind="ivfpq", pq_m=5)


def test_gpu_search_is_asked_for_by_device_and_guarded(monkeypatch):
    """device="cuda": with faiss-cpu (this machine) a warning says the search stays on CPU and
    the results are the CPU ones; with a FAISS that has GPU support (faked here: no GPU on
    this machine) each index goes through index_cpu_to_gpu, except HNSW (no GPU form)."""
    import faiss
    x = clustered(n=500)
    cpu = FeatureDatabase.build({"a": x, "b": x[:, :8]})
    if not hasattr(faiss, "StandardGpuResources"):
        with pytest.warns(UserWarning, match="searches on CPU"):
            gpu = FeatureDatabase.build({"a": x, "b": x[:, :8]}, device="cuda")
        np.testing.assert_array_equal(gpu.search("a", x[:20], 5)[1], cpu.search("a", x[:20], 5)[1])
    moved = []
    monkeypatch.setattr(faiss, "StandardGpuResources", lambda: "res", raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu",
                        lambda res, gpu, index: moved.append((res, gpu, index.d)) or index,
                        raising=False)
    FeatureDatabase.build({"a": x, "b": x[:, :8]}, device="cuda:1")
    assert moved == [("res", 1, 32), ("res", 1, 8)]
    moved.clear()
    with pytest.warns(UserWarning, match="no GPU form of HNSW"):
        FeatureDatabase.build({"a": x}, kind="hnsw", device="cuda")
    assert moved == []
