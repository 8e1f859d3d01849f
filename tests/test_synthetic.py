"""The planted-hardness generator: structure, determinism, planted ground truth, and statistics.

The statistical checks fit quick linear probes on a reduced-dims ``iemocap4`` (same structure,
dims a 64 / t 128 / v 128), train on sessions 1-4 and test on session 5, as the protocol does.
"""
import dataclasses

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from hardymer.data.dataset import MERDataset
from hardymer.data.synthetic import PRESETS, SyntheticConfig, generate, list_presets

MODS = ("a", "t", "v")
PLANTED = ["planted_dir_a", "planted_dir_t", "planted_dir_v", "planted_ind",
           "planted_hardness"]
PROBE_DIMS = (64, 128, 128)


@pytest.fixture(scope="module")
def tiny():
    return generate("tiny", seed=0)


@pytest.fixture(scope="module")
def iemocap4():
    return generate("iemocap4", seed=0)


@pytest.fixture(scope="module")
def probe():
    """Reduced-dims iemocap4 with single-modality and fused probes fitted on sessions 1-4."""
    ds = generate("iemocap4", seed=0, dims=PROBE_DIMS)
    train = (ds.utterances["session"] <= 4).to_numpy()

    def fit_predict(x):
        scaler = StandardScaler().fit(x[train])
        clf = LogisticRegression(C=0.01, max_iter=2000).fit(scaler.transform(x[train]),
                                                             ds.labels[train])
        return clf.predict(scaler.transform(x))

    # One BLAS thread: small problems, and threaded solvers crawl on a busy CI machine.
    with threadpool_limits(limits=1, user_api="blas"):
        pred = {m: fit_predict(ds.features[m]) for m in MODS}
        pred["atv"] = fit_predict(np.hstack([ds.features[m] for m in MODS]))
    return ds, ~train, pred


def test_list_presets():
    assert set(list_presets()) >= {"tiny", "demo", "iemocap4", "iemocap6", "mosi"}
    assert list_presets() == sorted(PRESETS)


def test_tiny_layout(tiny):
    ds = tiny
    assert isinstance(ds, MERDataset)
    assert ds.task == "classification" and ds.modalities == MODS
    assert ds.dims == {"a": 16, "t": 32, "v": 32}
    assert ds.class_names == ("happy", "sad", "neutral", "angry")
    for m in MODS:
        assert ds.features[m].dtype == np.float32 and ds.features[m].flags.c_contiguous
        assert np.isfinite(ds.features[m]).all()
    assert ds.labels.dtype == np.int64 and set(np.unique(ds.labels)) <= {0, 1, 2, 3}
    assert ds.available.dtype == bool and ds.available.shape == (ds.n_utterances, 3)
    assert ds.available.all()

    u = ds.utterances
    for col in ["utterance_id", "sequence_id", "position", "speaker", "split", "session",
                *PLANTED, "planted_ind_modality", "planted_kind"]:
        assert col in u, col
    assert u["utterance_id"].is_unique
    assert len(ds.sequences) == 20
    lengths = np.array([len(s) for s in ds.sequences])
    assert lengths.min() >= 6 and lengths.max() <= 20
    for rows in ds.sequences:
        assert (u["position"].to_numpy()[rows] == np.arange(len(rows))).all()
    assert set(u["speaker"]) == {"F", "M"}
    assert (u["split"] == "").all()
    assert sorted(u["session"].unique()) == [1, 2, 3, 4, 5]
    # The session is read from the id as in the reference layout: int(dialogue_id[4]).
    assert (u["sequence_id"].str[4].astype(int) == u["session"]).all()
    assert ds.meta["family"] == "iemocap" and ds.meta["generator"] == "hardymer.synthetic"
    assert ds.meta["preset"] == "tiny" and ds.meta["seed"] == 0
    # the record rebuilds the preset (fields added later are recorded only when not at default)
    assert SyntheticConfig(**ds.meta["config"]) == PRESETS["tiny"]


def test_iemocap4_sizes(iemocap4):
    ds = iemocap4
    assert len(ds.sequences) == 151
    assert 5400 <= ds.n_utterances <= 5700
    assert ds.dims == {"a": 512, "t": 1024, "v": 1024}
    lengths = np.array([len(s) for s in ds.sequences])
    assert lengths.min() >= 10 and lengths.max() <= 110
    assert abs(lengths.mean() - 36.6) < 1.0
    sessions = ds.sequence_column("session")
    counts = np.bincount(sessions.astype(int))[1:]
    assert len(counts) == 5 and counts.min() >= 28 and counts.max() <= 32
    # Two actors per session, F and M, mostly alternating turns but with same-speaker runs.
    speakers = ds.utterances["speaker"].to_numpy()
    changes = np.concatenate([speakers[s][1:] != speakers[s][:-1] for s in ds.sequences])
    assert 0.65 < changes.mean() < 0.95
    assert ds.meta["family"] == "iemocap"


def test_iemocap4_priors_and_persistence(iemocap4):
    ds = iemocap4
    freq = np.bincount(ds.labels, minlength=4) / ds.n_utterances
    np.testing.assert_allclose(freq, [0.30, 0.20, 0.31, 0.20], atol=0.04)
    same = np.concatenate([ds.labels[s][1:] == ds.labels[s][:-1] for s in ds.sequences])
    assert same.mean() > 0.6


def test_iemocap6_classes():
    ds = generate("iemocap6", seed=0, dims=(8, 8, 8))
    assert ds.class_names == ("happy", "sad", "neutral", "angry", "excited", "frustrated")
    counts = np.array([648, 1084, 1708, 1103, 1041, 1849])
    freq = np.bincount(ds.labels, minlength=6) / ds.n_utterances
    np.testing.assert_allclose(freq, counts / counts.sum(), atol=0.04)
    assert len(ds.sequences) == 151


def test_deterministic_from_seed():
    a, b = generate("tiny", seed=3), generate("tiny", seed=3)
    for m in MODS:
        assert a.features[m].tobytes() == b.features[m].tobytes()
    assert a.labels.tobytes() == b.labels.tobytes()
    assert a.utterances.equals(b.utterances)
    c = generate("tiny", seed=4)
    for m in MODS:
        assert a.features[m].shape != c.features[m].shape or \
            not np.array_equal(a.features[m], c.features[m])
    assert not a.utterances["planted_hardness"].equals(c.utterances["planted_hardness"])


def test_planting_changes_only_planted_utterances(tiny):
    # Separate random streams: the clean control holds the very same features as its planted
    # twin wherever nothing was planted, and different ones where something was.
    clean = generate("tiny", seed=0, direct_fraction=0, indirect_fraction=0)
    untouched = (tiny.utterances["planted_kind"] == "clean").to_numpy()
    changed = np.zeros(tiny.n_utterances, dtype=bool)
    for m in MODS:
        assert np.array_equal(clean.features[m][untouched], tiny.features[m][untouched])
        changed |= ~np.isclose(clean.features[m], tiny.features[m]).all(axis=1)
    assert changed[~untouched].all()


def test_planted_ground_truth(iemocap4):
    u = iemocap4.utterances
    n = len(u)
    kind = u["planted_kind"].to_numpy()
    assert set(kind) == {"clean", "direct", "indirect"}
    assert abs((kind == "direct").mean() - 0.2) < 0.005
    assert abs((kind == "indirect").mean() - 0.2) < 0.005

    direct = np.stack([u[f"planted_dir_{m}"].to_numpy() for m in MODS], axis=1)  # (N, 3)
    # One key modality per direct utterance, strength in [0.5, 1]; none elsewhere.
    assert ((direct > 0).sum(axis=1) == (kind == "direct")).all()
    strengths = direct.max(axis=1)[kind == "direct"]
    assert strengths.min() >= 0.5 and strengths.max() <= 1.0
    keys = np.bincount(direct[kind == "direct"].argmax(axis=1), minlength=3)
    assert keys.min() > 0.25 * keys.sum()  # key modality uniform over a, t, v

    ind = u["planted_ind"].to_numpy()
    ind_mod = u["planted_ind_modality"].to_numpy()
    assert ((ind > 0) == (kind == "indirect")).all()
    assert ((ind_mod != "") == (kind == "indirect")).all()
    assert set(ind_mod[kind == "indirect"]) == set(MODS)
    assert ind[kind == "indirect"].min() >= 0.5 and ind.max() <= 1.0
    false = u["planted_ind_label"].to_numpy()
    labels = iemocap4.labels
    assert (false[kind == "indirect"] != labels[kind == "indirect"]).all()
    assert (false[kind != "indirect"] == -1).all()

    np.testing.assert_allclose(u["planted_hardness"], direct.max(axis=1) + ind)
    assert (u["planted_hardness"].to_numpy()[kind == "clean"] == 0).all()
    assert n == iemocap4.n_utterances


def test_fraction_overrides():
    ds = generate("demo", seed=1, direct_fraction=0.1, indirect_fraction=0.3, dims=[8, 8, 8])
    kind = ds.utterances["planted_kind"]
    assert abs((kind == "direct").mean() - 0.1) < 0.005
    assert abs((kind == "indirect").mean() - 0.3) < 0.005
    assert ds.dims == {"a": 8, "t": 8, "v": 8}
    assert ds.meta["config"]["dims"] == (8, 8, 8)  # JSON lists are stored as tuples


def test_clean_control_shares_labels_with_planted_twin(tiny):
    clean = generate("tiny", seed=0, direct_fraction=0, indirect_fraction=0)
    u = clean.utterances
    for col in PLANTED:
        assert (u[col] == 0).all(), col
    assert (u["planted_ind_modality"] == "").all()
    assert (u["planted_kind"] == "clean").all()
    # Planting changes features only: structure and labels are those of the planted set.
    np.testing.assert_array_equal(clean.labels, tiny.labels)
    assert clean.utterances["utterance_id"].equals(tiny.utterances["utterance_id"])


def test_single_modality_order_and_fusion(probe):
    ds, test, pred = probe
    acc = {k: float((p[test] == ds.labels[test]).mean()) for k, p in pred.items()}
    chance = np.bincount(ds.labels[test]).max() / test.sum()
    assert acc["t"] >= acc["a"] + 0.03, acc
    assert acc["a"] >= acc["v"] + 0.03, acc
    assert acc["v"] >= chance + 0.05, (acc, chance)
    assert acc["atv"] >= max(acc["a"], acc["t"], acc["v"]) + 0.02, acc


def test_direct_hardness_hides_emotion_from_other_modalities(probe):
    ds, test, pred = probe
    u = ds.utterances
    clean = test & (u["planted_kind"] == "clean").to_numpy()
    hard, base = [], []
    for m in MODS:
        right = pred[m] == ds.labels
        # Direct-hard utterances whose key modality is another one: m alone must do worse.
        other_key = test & (u["planted_kind"] == "direct").to_numpy() & \
            (u[f"planted_dir_{m}"] == 0).to_numpy()
        hard.append(right[other_key].mean())
        base.append(right[clean].mean())
    assert np.mean(hard) <= np.mean(base) - 0.1, (hard, base)


def test_direct_key_modality_is_not_reconstructable(probe):
    ds, test, _ = probe
    u = ds.utterances
    train = ~test
    z = {m: StandardScaler().fit(ds.features[m][train]).transform(ds.features[m]) for m in MODS}
    clean = test & (u["planted_kind"] == "clean").to_numpy()
    for m in MODS:
        x = np.hstack([z[o] for o in MODS if o != m])
        err = ((Ridge(alpha=100.0).fit(x[train], z[m][train]).predict(x) - z[m]) ** 2).mean(1)
        key = test & (u[f"planted_dir_{m}"] > 0).to_numpy()
        # Partly reconstructable on clean utterances, much less where m is the key modality.
        assert err[clean].mean() < 0.8, m
        assert err[key].mean() > 1.25 * err[clean].mean(), m


def test_indirect_hardness_disagrees_with_label(probe):
    ds, test, pred = probe
    u = ds.utterances
    clean = test & (u["planted_kind"] == "clean").to_numpy()
    for m in MODS:
        right = pred[m] == ds.labels
        disagreeing = test & (u["planted_ind_modality"] == m).to_numpy()
        assert right[disagreeing].mean() <= right[clean].mean() - 0.2, m
        # It expresses the planted false emotion more often than the label.
        false = u["planted_ind_label"].to_numpy()
        assert (pred[m] == false)[disagreeing].mean() > right[disagreeing].mean(), m


def test_mosi_preset():
    ds = generate("mosi", seed=0, dims=(16, 32, 32))
    u = ds.utterances
    assert ds.task == "regression" and ds.labels.dtype == np.float32
    assert ds.family == "mosi" and ds.class_names is None
    assert len(ds.sequences) == 93 and ds.n_utterances == 2199
    assert ds.labels.min() >= -3 and ds.labels.max() <= 3
    assert 0 < (ds.labels == 0).sum() < 0.2 * ds.n_utterances
    assert "session" not in u
    assert (u["speaker"] == "").all()
    videos = u.groupby("split")["sequence_id"].nunique().to_dict()
    assert videos == {"train": 52, "val": 10, "test": 31}
    assert (u.groupby("sequence_id")["split"].nunique() == 1).all()
    # Indirect hardness expresses a sentiment of the opposite sign.
    ind = (u["planted_kind"] == "indirect").to_numpy()
    false = u["planted_ind_label"].to_numpy()
    y = ds.labels
    assert (np.sign(false[ind]) != np.sign(y[ind])).all()
    assert (np.abs(false[ind]) >= 1).all()


def test_mosi_text_is_most_informative():
    ds = generate("mosi", seed=0, dims=PROBE_DIMS)
    train = (ds.utterances["split"] != "test").to_numpy()
    corr = {}
    for m in MODS:
        scaler = StandardScaler().fit(ds.features[m][train])
        reg = Ridge(alpha=1000.0).fit(scaler.transform(ds.features[m][train]), ds.labels[train])
        p = reg.predict(scaler.transform(ds.features[m][~train]))
        corr[m] = np.corrcoef(p, ds.labels[~train])[0, 1]
    assert corr["t"] > corr["a"] + 0.05 and corr["a"] > corr["v"] + 0.03 and corr["v"] > 0.3


def test_config_object_and_errors():
    cfg = dataclasses.replace(PRESETS["tiny"], n_sequences=6, n_sessions=2, dims=(4, 4, 4))
    ds = generate(cfg, seed=0)
    assert len(ds.sequences) == 6 and ds.meta["preset"] == "custom"
    assert isinstance(cfg, SyntheticConfig)
    with pytest.raises(KeyError, match="unknown preset"):
        generate("nope")
    with pytest.raises(TypeError, match="unknown generator field"):
        generate("tiny", direct_fractoin=0.1)
    with pytest.raises(ValueError, match="direct_fraction"):
        generate("tiny", direct_fraction=0.7, indirect_fraction=0.5)
    with pytest.raises(ValueError, match="dims"):
        generate("tiny", dims=(4, 4))
    with pytest.raises(ValueError, match="priors"):
        generate("tiny", class_names=("x", "y", "z"))


def test_label_noise_only_on_planted_hard_utterances():
    """hard_label_noise: an exact share of the planted-hard utterances is recorded with
    another class; features and every other array stay as without it."""
    clean = generate("tiny", seed=0)
    noisy = generate("tiny", seed=0, hard_label_noise=0.5)
    u = noisy.utterances
    hard = u.planted_kind.to_numpy() != "clean"
    flipped = noisy.labels != clean.labels
    assert flipped.sum() == round(0.5 * hard.sum()) and not flipped[~hard].any()
    assert np.array_equal(flipped, u.planted_label_noise.to_numpy())
    assert np.array_equal(u.planted_true_label.to_numpy(), clean.labels)
    for m in clean.modalities:
        assert np.array_equal(noisy.features[m], clean.features[m])
    # A field added later is recorded only when used: earlier data sets keep their fingerprint.
    assert "hard_label_noise" not in clean.meta["config"]
    assert noisy.meta["config"]["hard_label_noise"] == 0.5
    assert "iemocap4-noisy" in list_presets()
    assert PRESETS["iemocap4-noisy"].hard_label_noise == 0.3
    with pytest.raises(ValueError, match="classification"):
        generate("mosi", seed=0, hard_label_noise=0.3, n_sequences=4)
