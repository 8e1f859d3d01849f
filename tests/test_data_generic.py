"""The generic folder format: round trips, defaults, memory maps, atomic writes, dispatch."""
import json

import numpy as np
import pandas as pd
import pytest

from hardymer.data import open_data
from hardymer.data.dataset import MERDataset
from hardymer.data.generic import read_generic, write_generic
from hardymer.data.io import load_dataset
from hardymer.data.validate import DataError, DataWarning


def tiny(task="classification", seed=0):
    """Three sequences with zero-padded ids, a missing modality here and there, extra columns."""
    rng = np.random.default_rng(seed)
    seqs = {"001": 3, "010": 2, "002": 4}
    rows = [dict(utterance_id=f"{s}{p:02d}", sequence_id=s, position=p, speaker="FM"[p % 2],
                 split="test" if s == "002" else "train", session=1 + int(s) % 2,
                 planted_hard=bool(p % 3 == 0), planted_noise=float(rng.normal()))
            for s, k in seqs.items() for p in range(k)]
    table = pd.DataFrame(rows)
    n = len(table)
    feats = {"audio": rng.normal(size=(n, 4)).astype(np.float32),
             "text": rng.normal(size=(n, 6)).astype(np.float32)}
    available = np.ones((n, 2), bool)
    available[[1, 5], 0] = False
    available[7, 1] = False
    for i, m in enumerate(feats):
        feats[m][~available[:, i]] = 0.0
    if task == "classification":
        labels, names = rng.integers(0, 3, n).astype(np.int64), ("x", "y", "z")
    else:
        labels, names = rng.normal(size=n).astype(np.float32), None
    return MERDataset("tiny", task, ("audio", "text"), feats, available, labels, table,
                      class_names=names, meta={"family": "generic", "seed": seed})


def assert_same(a: MERDataset, b: MERDataset) -> None:
    assert a.modalities == b.modalities and a.task == b.task and a.class_names == b.class_names
    for m in a.modalities:
        np.testing.assert_array_equal(np.asarray(a.features[m]), np.asarray(b.features[m]))
    np.testing.assert_array_equal(a.available, b.available)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.labels.dtype == b.labels.dtype
    pd.testing.assert_frame_equal(a.utterances.reset_index(drop=True),
                                  b.utterances.reset_index(drop=True), check_like=True)
    assert [list(s) for s in a.sequences] == [list(s) for s in b.sequences]


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_round_trip(tmp_path, task, mmap):
    ds = tiny(task)
    out = write_generic(ds, tmp_path / "set")
    back = read_generic(out, mmap=mmap)
    assert_same(ds, back)
    assert back.utterances["utterance_id"].iloc[0] == "00100"  # leading zeros survive
    assert back.sequence_ids[0] == "001"
    assert back.meta == ds.meta and back.name == "tiny"
    if mmap:
        assert all(isinstance(back.features[m], np.memmap) for m in back.modalities)
        assert not back.features["audio"].flags.writeable


def test_written_files(tmp_path):
    ds = tiny()
    ds.features["audio"][1] = 7.0  # a stale value behind an unavailable entry
    out = write_generic(ds, tmp_path / "set")
    header = json.loads((out / "dataset.json").read_text())
    assert header["format"] == "hardymer-generic" and header["version"] == 1
    assert list(header["modalities"].items()) == [("audio", 4), ("text", 6)]
    assert np.load(out / "features" / "audio.npy")[1].tolist() == [0.0] * 4
    assert np.load(out / "available.npy").dtype == bool
    assert list(pd.read_csv(out / "sequences.csv", dtype=str)["sequence_id"]) == \
        ["001", "010", "002"]


def _write_minimal(folder, csv_text, dims=None, n=None):
    """A hand-written folder: dataset.json, utterances.csv and features only."""
    dims = dims or {"a": 3}
    folder.mkdir()
    (folder / "dataset.json").write_text(json.dumps(
        {"format": "hardymer-generic", "version": 1, "name": "mini", "task": "classification",
         "modalities": dims, "class_names": None, "meta": {}}))
    (folder / "utterances.csv").write_text(csv_text)
    (folder / "features").mkdir()
    n = n or csv_text.count("\n") - 1
    for m, d in dims.items():
        np.save(folder / "features" / f"{m}.npy", np.arange(n * d, dtype=np.float32).reshape(n, d))


def test_defaults_without_optional_columns(tmp_path):
    _write_minimal(tmp_path / "m", "utterance_id,label\n007,0\nNA,1\nnull,2\n")
    ds = read_generic(tmp_path / "m")
    u = ds.utterances
    assert list(u["utterance_id"]) == ["007", "NA", "null"]  # ids stay text, never NaN
    assert list(u["sequence_id"]) == list(u["utterance_id"])  # each its own sequence
    assert list(u["position"]) == [0, 0, 0]
    assert list(u["speaker"]) == ["", "", ""] and list(u["split"]) == ["", "", ""]
    assert ds.available.all() and ds.available.shape == (3, 1)
    assert ds.n_classes == 3 and ds.family == "generic" and ds.name == "mini"


def test_position_defaults_to_row_order(tmp_path):
    csv = "utterance_id,sequence_id,label\nu1,s1,0\nu2,s2,0\nu3,s1,1\nu4,s1,0\n"
    _write_minimal(tmp_path / "m", csv)
    ds = read_generic(tmp_path / "m")
    assert list(ds.utterances["position"]) == [0, 0, 1, 2]
    assert [list(s) for s in ds.sequences] == [[0, 2, 3], [1]]


def test_unavailable_rows_may_hold_anything(tmp_path):
    _write_minimal(tmp_path / "m", "utterance_id,label\nu1,0\nu2,1\n", dims={"a": 3, "b": 2})
    feats = np.array([[np.nan, np.inf, 1.0], [1.0, 2.0, 3.0]], dtype=np.float32)
    np.save(tmp_path / "m" / "features" / "a.npy", feats)
    np.save(tmp_path / "m" / "available.npy", np.array([[False, True], [True, True]]))
    for mmap in (False, True):
        ds = read_generic(tmp_path / "m", mmap=mmap)
        np.testing.assert_array_equal(ds.features["a"], [[0, 0, 0], [1, 2, 3]])


def test_utterance_without_any_modality_is_left_out_with_a_warning(tmp_path):
    ds = tiny()
    ds.available[2] = False
    ds.features["audio"][2] = ds.features["text"][2] = 0
    with pytest.warns(DataWarning, match=r"1 utterance\(s\) have no available modality "
                                         r"\(first: 00102\)"):
        got = read_generic(write_generic(ds, tmp_path / "set"))
    assert got.n_utterances == ds.n_utterances - 1 and "00102" not in set(got.utterances[
        "utterance_id"])
    assert got.meta["dropped_no_modality"] == 1
    assert_same(ds.select_utterances(ds.available.any(1)), got)


def test_parquet_needs_pyarrow(tmp_path):
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("pyarrow is installed: the error path cannot be exercised")
    out = write_generic(tiny(), tmp_path / "set")
    (out / "utterances.csv").unlink()
    (out / "utterances.parquet").write_bytes(b"PAR1")
    with pytest.raises(DataError, match="pyarrow") as err:
        read_generic(out)
    assert "utterances.parquet" in str(err.value)


# --- atomic writes ---------------------------------------------------------------------------

def _failing_save(monkeypatch, after=1):
    real, calls = np.save, []

    def save(*args, **kwargs):
        if len(calls) >= after:
            raise OSError("disk full (simulated)")
        calls.append(args[0])
        return real(*args, **kwargs)
    monkeypatch.setattr(np, "save", save)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    _failing_save(monkeypatch)
    with pytest.raises(OSError, match="simulated"):
        write_generic(tiny(), tmp_path / "set")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temporary sibling


def test_refuses_to_clobber(tmp_path):
    out = tmp_path / "set"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="overwrite"):
        write_generic(tiny(), out)
    assert (out / "precious.txt").read_text() == "keep me"


def test_empty_folder_is_fine(tmp_path):
    (tmp_path / "set").mkdir()
    assert_same(tiny(), read_generic(write_generic(tiny(), tmp_path / "set")))


def test_overwrite_replaces_and_failure_keeps_old(tmp_path, monkeypatch):
    out = write_generic(tiny(seed=1), tmp_path / "set")
    write_generic(tiny(seed=2), out, overwrite=True)
    assert_same(tiny(seed=2), read_generic(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no leftovers
    _failing_save(monkeypatch)
    with pytest.raises(OSError):
        write_generic(tiny(seed=3), out, overwrite=True)
    monkeypatch.undo()
    assert_same(tiny(seed=2), read_generic(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


# --- dispatch --------------------------------------------------------------------------------

def test_load_dataset_dispatches_generic(tmp_path):
    out = write_generic(tiny(), tmp_path / "set")
    assert_same(tiny(), load_dataset(out))
    assert_same(tiny(), open_data(str(out), mmap=True))


def test_load_dataset_rejects_other_things(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="dataset.json") as err:
        load_dataset(tmp_path / "stuff")
    assert "stuff" in str(err.value) and "_features_raw_" in str(err.value)
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path / "absent")
