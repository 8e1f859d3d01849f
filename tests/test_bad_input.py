"""Bad input fails at the boundary with a DataError naming the file, the field and the expected
thing. One test per case, each starting from a valid generic folder and breaking one thing."""
import json

import numpy as np
import pandas as pd
import pytest

from hardymer.data.dataset import MERDataset
from hardymer.data.generic import read_generic, write_generic
from hardymer.data.io import load_dataset
from hardymer.data.validate import DataError
from hardymer.protocol import parse_condition

N = 6  # utterances in the valid folder


@pytest.fixture
def folder(tmp_path):
    """A valid generic folder: 2 sequences of 3, modalities a (dim 4) and t (dim 3), 3 classes."""
    rng = np.random.default_rng(0)
    table = pd.DataFrame(dict(utterance_id=[f"u{i}" for i in range(N)],
                              sequence_id=["s1"] * 3 + ["s2"] * 3, position=[0, 1, 2] * 2,
                              speaker=["A", "B"] * 3, split=[""] * N))
    ds = MERDataset("bad", "classification", ("a", "t"),
                    {"a": rng.normal(size=(N, 4)).astype(np.float32),
                     "t": rng.normal(size=(N, 3)).astype(np.float32)},
                    np.ones((N, 2), bool), np.array([0, 1, 2, 0, 1, 2]), table,
                    class_names=("x", "y", "z"))
    path = write_generic(ds, tmp_path / "data")
    read_generic(path)  # valid before each test breaks it
    return path


def error_of(path, *parts) -> str:
    """Read, expect a DataError, check the message holds every part; return it."""
    with pytest.raises(DataError) as err:
        read_generic(path)
    msg = str(err.value)
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"
    return msg


def edit_json(path, **changes):
    header = json.loads((path / "dataset.json").read_text())
    header.update(changes)
    (path / "dataset.json").write_text(json.dumps(header))


def edit_csv(path, change):
    table = pd.read_csv(path / "utterances.csv", dtype=str, keep_default_na=False)
    change(table)
    table.to_csv(path / "utterances.csv", index=False)


def test_missing_feature_file(folder):
    (folder / "features" / "t.npy").unlink()
    error_of(folder, "t.npy", "[t]", "file not found", f"expected the ({N}, 3) feature matrix")


def test_missing_dataset_json(folder):
    (folder / "dataset.json").unlink()
    error_of(folder, "dataset.json", "file not found", "needs dataset.json")
    with pytest.raises(DataError, match="expected a generic data set folder"):
        load_dataset(folder)


def test_missing_utterance_table(folder):
    (folder / "utterances.csv").unlink()
    error_of(folder, "utterances.csv", "[utterances]", "expected utterances.csv")


def test_wrong_dimension(folder):
    edit_json(folder, modalities={"a": 5, "t": 3})
    error_of(folder, "a.npy", "[a]", "expected dimension 5, got 4")


def test_nan_features(folder):
    feats = np.load(folder / "features" / "a.npy")
    feats[4, 1] = np.nan
    np.save(folder / "features" / "a.npy", feats)
    error_of(folder, "a.npy", "[a]", "NaN or inf", "utterance 'u4'", "expected finite")


def test_inf_features(folder):
    feats = np.load(folder / "features" / "t.npy")
    feats[2, 0] = -np.inf
    np.save(folder / "features" / "t.npy", feats)
    error_of(folder, "t.npy", "[t]", "NaN or inf", "utterance 'u2'", "expected finite")


def test_labels_out_of_range(folder):
    edit_csv(folder, lambda t: t.__setitem__("label", ["0", "1", "2", "3", "0", "1"]))
    error_of(folder, "utterances.csv", "[label]", "label 3", "'u3'", "expected a class id in [0, 2]")


def test_non_integer_class_labels(folder):
    edit_csv(folder, lambda t: t.__setitem__("label", ["0", "1.5", "2", "0", "0", "1"]))
    error_of(folder, "utterances.csv", "[label]", "expected integer class ids")


def test_non_finite_regression_labels(folder):
    edit_json(folder, task="regression", class_names=None)
    edit_csv(folder, lambda t: t.__setitem__("label", ["0.5", "1", "inf", "0", "0", "1"]))
    error_of(folder, "utterances.csv", "[label]", "NaN or inf", "'u2'", "expected finite")


def test_unknown_format(folder):
    edit_json(folder, format="something-else")
    error_of(folder, "dataset.json", "[format]", "expected format 'hardymer-generic'",
             "'something-else'")


def test_unknown_task(folder):
    edit_json(folder, task="clustering")
    error_of(folder, "dataset.json", "[task]", "expected one of classification, regression",
             "'clustering'")


def test_truncated_npy(folder):
    file = folder / "features" / "a.npy"
    file.write_bytes(file.read_bytes()[:-10])
    error_of(folder, "a.npy", "[a]", "cannot read as a .npy array (truncated or corrupt?)")


def test_corrupt_csv(folder):
    (folder / "utterances.csv").write_text("utterance_id,label\nu0,0\nu1,1,7,8\n")
    error_of(folder, "utterances.csv", "[utterances]", "cannot parse as CSV", "Expected 2 fields")


def test_corrupt_json(folder):
    (folder / "dataset.json").write_text('{"format": "hardymer-generic", "task": ')
    error_of(folder, "dataset.json", "[header]", "cannot parse as JSON")


def test_sequence_with_no_utterances(folder):
    (folder / "sequences.csv").write_text("sequence_id\ns1\nghost\ns2\n")
    error_of(folder, "sequences.csv", "[sequence_id]", "sequence 'ghost' has no utterances",
             "expected at least one utterance")


def test_duplicate_utterance_ids(folder):
    edit_csv(folder, lambda t: t.__setitem__("utterance_id", ["u0", "u1", "u2", "u3", "u1", "u5"]))
    error_of(folder, "utterances.csv", "[utterance_id]", "duplicate", "'u1'",
             "expected each utterance_id once")


def test_wrong_row_count(folder):
    np.save(folder / "features" / "t.npy", np.zeros((N - 1, 3), np.float32))
    error_of(folder, "t.npy", "[t]", f"expected {N} rows (one per utterance), got {N - 1}")


def test_available_wrong_shape(folder):
    np.save(folder / "available.npy", np.ones((N, 3), bool))
    error_of(folder, "available.npy", "[available]", f"expected shape ({N}, 2), got ({N}, 3)")


def test_available_wrong_dtype(folder):
    np.save(folder / "available.npy", np.ones((N, 2), np.int64))
    error_of(folder, "available.npy", "[available]", "expected dtype bool, got int64")


def test_some_rows_without_sequence_id(folder):
    edit_csv(folder, lambda t: t.__setitem__("sequence_id", ["s1", "s1", "", "s2", "s2", "s2"]))
    error_of(folder, "utterances.csv", "[sequence_id]", "utterance 'u2'",
             "expected a sequence id on every row")


def test_missing_label_column(folder):
    edit_csv(folder, lambda t: t.pop("label"))
    error_of(folder, "utterances.csv", "[label]", "expected a column 'label'")


# --- conditions (parsed by hardymer.protocol) ------------------------------------------------

def test_empty_condition():
    with pytest.raises(DataError) as err:
        parse_condition("", ("a", "t", "v"))
    msg = str(err.value)
    assert "[condition]" in msg and "empty" in msg and "a, t, v" in msg


def test_unknown_modality_letter():
    with pytest.raises(DataError) as err:
        parse_condition("x", ("a", "t", "v"))
    msg = str(err.value)
    assert "'x'" in msg and "[condition]" in msg and "a=a" in msg and "v=v" in msg


def test_unknown_modality_name():
    with pytest.raises(DataError) as err:
        parse_condition("audio+foo", ("audio", "text"))
    msg = str(err.value)
    assert "'audio+foo'" in msg and "'foo'" in msg and "expected one of audio, text" in msg
