"""The reference layout (GCNet pickles + per-utterance .npy folders) on tiny generated files."""
import pickle
from pathlib import Path

import numpy as np
import pytest

from hardymer.data.generic import read_generic
from hardymer.data.io import load_dataset
from hardymer.data.reference import convert, read_reference
from hardymer.data.validate import DataError

DA, DT, DV = 4, 5, 3  # audio, text, video dims of the fake features


def _save(path: Path, arr) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.asarray(arr, dtype=np.float32))


def _pickle(path: Path, items) -> None:
    with open(path, "wb") as f:
        pickle.dump(items, f)


@pytest.fixture
def iemocap(tmp_path):
    """2 sessions x 2 dialogues of 3-4 utterances; returns (root, expected values)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "IEMOCAPFour"
    dialogues = {"Ses01F_impro01": "FMF", "Ses01M_script01": "MFMF",
                 "Ses02F_impro02": "FFM", "Ses02M_impro03": "MMF"}
    ids, labels, speakers, sentences = {}, {}, {}, {}
    want = {"a": {}, "t": {}, "v": {}, "v_ok": {}}
    for d, spk in dialogues.items():
        ids[d] = [f"{d}_{s}{i:03d}" for i, s in enumerate(spk)]
        labels[d] = [int(x) for x in rng.integers(0, 4, len(spk))]
        speakers[d], sentences[d] = list(spk), ["words"] * len(spk)
        for uid, s in zip(ids[d], spk):
            a = rng.normal(size=(6, DA)) if uid.endswith("F000") else rng.normal(size=DA)
            _save(root / "wav2vec-large-c-UTT" / f"{uid}.npy", a)
            t = rng.normal(size=DT)
            _save(root / "deberta-large-4-UTT" / f"{uid}.npy", t)
            want["a"][uid] = np.float32(a).mean(axis=0) if a.ndim == 2 else np.float32(a)
            want["t"][uid] = np.float32(t)
            own, other = rng.normal(size=(5, DV)), rng.normal(size=(4, DV)) + 100
            if uid == "Ses01M_script01_F001":
                own = np.zeros((0, DV))  # an empty face track -> missing
            if uid != "Ses02M_impro03_F002":  # this one has no video folder at all
                vdir = root / "manet_UTT" / uid
                _save(vdir / f"compress_{s}.npy", own)
                _save(vdir / f"compress_{'M' if s == 'F' else 'F'}.npy", other)
            ok = own.shape[0] > 0 and uid != "Ses02M_impro03_F002"
            want["v"][uid] = np.float32(own).mean(axis=0) if ok else np.zeros(DV, np.float32)
            want["v_ok"][uid] = ok
    train = {d for d in dialogues if d.startswith("Ses01")}
    test = set(dialogues) - train
    _pickle(root / "IEMOCAP_features_raw_4way.pkl",
            [ids, labels, speakers, sentences, train, test])
    want["labels"] = [y for d in dialogues for y in labels[d]]
    want["speakers"] = [s for d in dialogues for s in dialogues[d]]
    want["ids"] = [u for d in dialogues for u in ids[d]]
    return root, want


@pytest.fixture
def mosi(tmp_path):
    """Video ids containing '_'; 7 pickle items; one empty face array."""
    rng = np.random.default_rng(1)
    root = tmp_path / "CMUMOSI"
    videos = {"ab_CD-12": 3, "x_y_z": 2, "Qq9": 2, "long_name_1": 2}
    ids = {v: [f"{v}_{i + 1}" for i in range(k)] for v, k in videos.items()}
    labels = {v: [float(x) for x in rng.uniform(-3, 3, k)] for v, k in videos.items()}
    want = {}
    for v, uids in ids.items():
        for uid in uids:
            _save(root / "wav2vec-large-c-UTT" / f"{uid}.npy", rng.normal(size=(3, DA)))
            _save(root / "deberta-large-4-UTT" / f"{uid}.npy", rng.normal(size=DT))
            face = np.zeros((0, DV)) if uid == "x_y_z_2" else rng.normal(size=(2, DV))
            _save(root / "manet_UTT" / f"{uid}.npy", face)
            want[uid] = np.load(root / "wav2vec-large-c-UTT" / f"{uid}.npy").mean(axis=0)
    _pickle(root / "CMUMOSI_features_raw_2way.pkl",
            [ids, labels, {v: [] for v in videos}, {v: [""] * k for v, k in videos.items()},
             ["ab_CD-12", "x_y_z"], ["Qq9"], ["long_name_1"]])
    return root, want, labels


def test_iemocap_values(iemocap):
    root, want = iemocap
    ds = read_reference(root, "iemocap4", allow_pickle=True, progress=False)
    ids = list(ds.utterances["utterance_id"])
    assert ids == want["ids"]
    for i, uid in enumerate(ids):
        np.testing.assert_allclose(ds.features["a"][i], want["a"][uid], rtol=1e-6)
        np.testing.assert_array_equal(ds.features["t"][i], want["t"][uid])
        # the own speaker's track (the other one is offset by +100)
        np.testing.assert_allclose(ds.features["v"][i], want["v"][uid], rtol=1e-6)
        assert ds.available[i, 2] == want["v_ok"][uid]
    assert ds.available[:, :2].all()
    assert ds.available[:, 2].sum() == len(ids) - 2
    assert ds.dims == {"a": DA, "t": DT, "v": DV}


def test_iemocap_columns(iemocap):
    root, want = iemocap
    ds = read_reference(root, allow_pickle=True, progress=False)  # kind from the file name
    u = ds.utterances
    assert ds.task == "classification" and ds.labels.dtype == np.int64
    assert ds.labels.tolist() == want["labels"]
    assert ds.class_names == ("happy", "sad", "neutral", "angry") and ds.family == "iemocap"
    assert u["session"].tolist() == [1] * 7 + [2] * 6
    assert set(u["split"]) == {""}
    assert u["speaker"].tolist() == want["speakers"]
    assert u["position"].tolist() == [0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 0, 1, 2]
    assert list(ds.sequence_ids) == ["Ses01F_impro01", "Ses01M_script01", "Ses02F_impro02",
                                     "Ses02M_impro03"]


def test_mosi(mosi):
    root, want, labels = mosi
    ds = read_reference(root, "mosi", allow_pickle=True, progress=False)
    u = ds.utterances
    assert ds.task == "regression" and ds.labels.dtype == np.float32 and ds.family == "mosi"
    assert "session" not in u
    np.testing.assert_allclose(ds.labels, [y for v in labels for y in labels[v]], rtol=1e-6)
    assert u["split"].tolist() == ["train"] * 5 + ["val"] * 2 + ["test"] * 2
    assert u["sequence_id"].tolist()[3:5] == ["x_y_z", "x_y_z"]
    assert u["utterance_id"].tolist()[3:5] == ["x_y_z_1", "x_y_z_2"]
    assert set(u["speaker"]) == {""}
    for i, uid in enumerate(u["utterance_id"]):
        np.testing.assert_allclose(ds.features["a"][i], want[uid], rtol=1e-6)
    empty = u["utterance_id"].tolist().index("x_y_z_2")
    assert not ds.available[empty, 2] and not ds.features["v"][empty].any()
    assert ds.available.sum() == 3 * len(u) - 1


def test_pickle_refused_without_opt_in(iemocap):
    root, _ = iemocap
    for call in (lambda: read_reference(root, "iemocap4", progress=False),
                 lambda: load_dataset(root)):
        with pytest.raises(DataError) as err:
            call()
        msg = str(err.value)
        assert "arbitrary code" in msg and "--trust-pickle" in msg and "allow_pickle=True" in msg
        assert "IEMOCAP_features_raw_4way.pkl" in msg


def test_dispatch_and_kind_from_name(iemocap, mosi):
    root, want = iemocap
    ds = load_dataset(root, allow_pickle=True, progress=False)
    assert ds.meta["kind"] == "iemocap4"
    ds = load_dataset(root / "IEMOCAP_features_raw_4way.pkl", allow_pickle=True, progress=False)
    assert ds.n_utterances == len(want["ids"])
    (root / "IEMOCAP_features_raw_4way.pkl").rename(root / "IEMOCAP_features_raw_6way.pkl")
    ds = load_dataset(root, allow_pickle=True, progress=False)
    assert ds.meta["kind"] == "iemocap6" and len(ds.class_names) == 6
    assert load_dataset(mosi[0], allow_pickle=True, progress=False).family == "mosi"


def test_feature_folders_under_features(iemocap):
    root, want = iemocap
    (root / "features").mkdir()
    for name in ("wav2vec-large-c-UTT", "deberta-large-4-UTT", "manet_UTT"):
        (root / name).rename(root / "features" / name)
    ds = read_reference(root, "iemocap4", allow_pickle=True, progress=False)
    assert ds.n_utterances == len(want["ids"])


def test_convert_round_trip(iemocap, tmp_path):
    root, _ = iemocap
    direct = read_reference(root, "iemocap4", allow_pickle=True, progress=False)
    convert(root, tmp_path / "out", "auto", allow_pickle=True, progress=False)
    back = read_generic(tmp_path / "out")
    for m in direct.modalities:
        np.testing.assert_array_equal(back.features[m], direct.features[m])
    np.testing.assert_array_equal(back.available, direct.available)
    np.testing.assert_array_equal(back.labels, direct.labels)
    assert back.labels.dtype == direct.labels.dtype
    for col in ("utterance_id", "sequence_id", "position", "speaker", "split", "session"):
        assert back.utterances[col].tolist() == direct.utterances[col].tolist()
    assert back.class_names == direct.class_names and back.family == "iemocap"
    with pytest.raises(FileExistsError):  # and it does not clobber the result
        convert(root, tmp_path / "out", allow_pickle=True, progress=False)


def test_missing_audio_file(iemocap):
    root, _ = iemocap
    (root / "wav2vec-large-c-UTT" / "Ses01F_impro01_M001.npy").unlink()
    with pytest.raises(DataError) as err:
        read_reference(root, "iemocap4", allow_pickle=True, progress=False)
    msg = str(err.value)
    assert "Ses01F_impro01_M001.npy" in msg and "[a]" in msg and "missing_ok" in msg
    ds = read_reference(root, "iemocap4", allow_pickle=True, progress=False, missing_ok=True)
    i = ds.utterances["utterance_id"].tolist().index("Ses01F_impro01_M001")
    assert not ds.available[i, 0] and not ds.features["a"][i].any()
    assert ds.available[:, 0].sum() == ds.n_utterances - 1


def test_dimension_mismatch_names_file(iemocap):
    root, _ = iemocap
    _save(root / "deberta-large-4-UTT" / "Ses02F_impro02_F000.npy", np.ones(DT + 2))
    with pytest.raises(DataError) as err:
        read_reference(root, "iemocap4", allow_pickle=True, progress=False)
    msg = str(err.value)
    assert "Ses02F_impro02_F000.npy" in msg and "[t]" in msg
    assert f"expected dimension {DT}" in msg and f"got {DT + 2}" in msg


def test_bad_pickle_structure(iemocap):
    root, _ = iemocap
    path = root / "IEMOCAP_features_raw_4way.pkl"
    with open(path, "rb") as f:
        items = pickle.load(f)
    _pickle(path, items[:5])
    with pytest.raises(DataError, match=r"\[pickle\] expected a list of 6 items"):
        read_reference(root, "iemocap4", allow_pickle=True, progress=False)
    items[1] = ["not", "a", "dict"]
    _pickle(path, items)
    with pytest.raises(DataError, match=r"\[videoLabels\] expected a dict"):
        read_reference(root, "iemocap4", allow_pickle=True, progress=False)
    items[1] = {d: [9] * len(u) for d, u in items[0].items()}
    _pickle(path, items)
    with pytest.raises(DataError, match=r"\[videoLabels\] label 9 out of range.*\[0, 3\]"):
        read_reference(root, "iemocap4", allow_pickle=True, progress=False)


def test_mosi_video_in_no_split(mosi):
    root, _, _ = mosi
    path = root / "CMUMOSI_features_raw_2way.pkl"
    with open(path, "rb") as f:
        items = pickle.load(f)
    items[6] = []
    _pickle(path, items)
    with pytest.raises(DataError, match="long_name_1.*none of trainVids, valVids, testVids"):
        read_reference(root, "mosi", allow_pickle=True, progress=False)


def test_no_label_pickle(tmp_path):
    with pytest.raises(DataError, match="expected exactly one label pickle"):
        read_reference(tmp_path, allow_pickle=True, progress=False)


@pytest.fixture
def with_sentences(iemocap):
    """The IEMOCAP fixture with a different transcript per utterance (one left empty)."""
    root, want = iemocap
    path = root / "IEMOCAP_features_raw_4way.pkl"
    with open(path, "rb") as f:
        ids, labels, speakers, _, train, test = pickle.load(f)
    sentences = {d: [f"utterance {u} of dialogue {d}" for u in us] for d, us in ids.items()}
    sentences["Ses02F_impro02"][1] = ""
    _pickle(path, [ids, labels, speakers, sentences, train, test])
    return root, want, sentences


@pytest.mark.parametrize("keep_av", [True, False])
def test_convert_with_real_text_from_the_pickle(with_sentences, tmp_path, keep_av):
    import shutil
    from typer.testing import CliRunner
    from hardymer.cli.main import app
    from hardymer.data.generic import read_generic
    from hardymer.features.extractors import create_extractor
    root, want, sentences = with_sentences
    shutil.rmtree(root / "deberta-large-4-UTT")       # the text comes from the pickle
    if not keep_av:                                   # only the label pickle
        shutil.rmtree(root / "wav2vec-large-c-UTT")
        shutil.rmtree(root / "manet_UTT")
    out = tmp_path / "text"
    res = CliRunner().invoke(app, ["convert", str(root), "--kind", "iemocap4", "--trust-pickle",
                                   "--text", "minilm", "--out", str(out)])
    assert res.exit_code == 0, res.output
    ds = read_generic(out)
    assert ds.modalities == (("a", "t", "v") if keep_av else ("t",))
    assert ds.dims["t"] == 384
    table = ds.utterances
    assert table["utterance_id"].tolist() == [u for u in want["ids"]
                                              if u != "Ses02F_impro02_F001" or keep_av]
    flat = {u: s for d in sentences for u, s in zip(
        [x for x in want["ids"] if x.startswith(d)], sentences[d])}
    ex = create_extractor("minilm", "t").ensure_loaded()
    rows = [i for i, u in enumerate(table["utterance_id"]) if flat[u]]
    np.testing.assert_allclose(ds.features["t"][rows],
                               ex.encode([flat[table["utterance_id"][i]] for i in rows]),
                               atol=1e-5)
    t_col = ds.modalities.index("t")
    empty = table["utterance_id"] == "Ses02F_impro02_F001"
    assert not ds.available[empty.to_numpy(), t_col].any()   # empty transcript: absent
    assert table["session"].tolist()[:3] == [1, 1, 1] and "speaker" in table
    assert table["transcript"].iloc[0] == flat[table["utterance_id"].iloc[0]]
    if keep_av:
        np.testing.assert_allclose(ds.features["a"][0], want["a"][table["utterance_id"][0]])
