import numpy as np
import pytest

from hardymer.data.validate import DataError
from hardymer.protocol import all_fixed_conditions, make_folds, parse_condition

MODS = ("a", "t", "v")


def test_seven_fixed_conditions_in_paper_order():
    assert [c.name for c in all_fixed_conditions(MODS)] == ["a", "t", "v", "at", "av", "tv", "atv"]


@pytest.mark.parametrize("text,keep", [("at", ("a", "t")), ("ta", ("a", "t")), ("all", MODS),
                                       ("v", ("v",))])
def test_parse_fixed(text, keep):
    c = parse_condition(text, MODS)
    assert c.keep == keep and not c.is_random


def test_parse_names_for_generic_modalities():
    c = parse_condition("text+audio", ("audio", "text", "video"))
    assert c.keep == ("audio", "text") and c.name == "at"
    c = parse_condition("eeg+text", ("eeg", "emg", "text"))  # non-unique first letters
    assert c.name == "eeg+text"


@pytest.mark.parametrize("bad", ["", "x", "aa", "random:1.5", "random:abc", "audio+foo"])
def test_bad_conditions_name_the_problem(bad):
    with pytest.raises(DataError) as err:
        parse_condition(bad, ("a", "t", "v") if "+" not in bad else ("audio", "text"))
    assert "condition" in str(err.value)


def test_fixed_mask_respects_data_presence():
    present = np.array([[1, 1, 1], [1, 0, 1]], bool)
    m = parse_condition("at", MODS).mask(present, MODS)
    assert m.tolist() == [[True, True, False], [True, False, False]]


def test_random_mask_rate_keeps_one_and_is_seeded():
    present = np.ones((20000, 3), bool)
    c = parse_condition("random:0.5", MODS)
    m = c.mask(present, MODS, seed=1, draw=3)
    assert m.any(axis=1).all()                        # at least one modality kept
    # each modality dropped with p=0.5, then all-dropped rows (1/8) get one back
    expected_keep = 0.5 + (1 / 8) / 3
    assert abs(m.mean() - expected_keep) < 0.01
    assert np.array_equal(m, c.mask(present, MODS, seed=1, draw=3))
    assert not np.array_equal(m, c.mask(present, MODS, seed=1, draw=4))
    assert not np.array_equal(m, c.mask(present, MODS, seed=2, draw=3))


def test_random_zero_rate_is_full():
    present = np.ones((50, 3), bool)
    assert parse_condition("random:0", MODS).mask(present, MODS).all()


def test_leave_one_session_out_folds(toy):
    folds = make_folds(toy)
    assert len(folds) == 5
    sess = toy.sequence_column("session")
    for k, f in enumerate(folds):
        assert set(sess[f.test]) == {k + 1}
        assert k + 1 not in set(sess[f.train]) | set(sess[f.val])
        assert len(f.val) >= 1
        assert not set(f.train) & set(f.val)
    # validation carve is fixed by seed
    again = make_folds(toy)
    assert all(np.array_equal(a.val, b.val) for a, b in zip(folds, again))


def test_split_column_and_kfold(toy):
    df = toy.utterances
    seq = df["sequence_id"].str[1:].astype(int)
    df["split"] = np.where(seq < 20, "train", np.where(seq < 24, "val", "test"))
    df = df.drop(columns="session")
    ds = type(toy)(toy.name, toy.task, toy.modalities, toy.features, toy.available, toy.labels, df)
    (fold,) = make_folds(ds)
    assert len(fold.train) == 20 and len(fold.val) == 4 and len(fold.test) == 6
    df["split"] = ""
    ds = type(toy)(toy.name, toy.task, toy.modalities, toy.features, toy.available, toy.labels, df)
    folds = make_folds(ds, n_folds=3)
    assert len(folds) == 3
    tests = np.concatenate([f.test for f in folds])
    assert sorted(tests.tolist()) == list(range(len(ds.sequences)))  # every sequence tested once


def test_official_training_split(toy):
    from hardymer.protocol.splits import official_train_sequences
    seqs, what = official_train_sequences(toy)        # IEMOCAP: every session but the last
    sess = toy.sequence_column("session")
    assert set(sess[seqs]) == {1, 2, 3, 4} and what == "sessions 1, 2, 3, 4"
    assert set(sess[seqs]) == set(sess[make_folds(toy)[4].train]) | \
        set(sess[make_folds(toy)[4].val])
    df = toy.utterances.copy()
    seq = df["sequence_id"].str[1:].astype(int)
    df["split"] = np.where(seq < 20, "train", np.where(seq < 24, "val", "test"))
    df = df.drop(columns="session")
    ds = type(toy)(toy.name, toy.task, toy.modalities, toy.features, toy.available, toy.labels, df)
    seqs, what = official_train_sequences(ds)         # CMU: the split column's train part
    assert len(seqs) == 20 and what == "split train"
    df = df.drop(columns="split")
    ds = type(toy)(toy.name, toy.task, toy.modalities, toy.features, toy.available, toy.labels, df)
    with pytest.raises(DataError, match="finetune_scope=fold"):
        official_train_sequences(ds)
