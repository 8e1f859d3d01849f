"""Train / validation / test folds over sequences.

* IEMOCAP-style data (a ``session`` column): leave-one-session-out; fold *i* tests session
  ``sessions[i]``. The papers use no validation set; we carve ``val_fraction`` of the training
  sequences out, fixed by seed.
* Data with a ``split`` column (CMU-MOSI/MOSEI, users' data): one fold from that column;
  ``val`` rows are the validation part (carved from train when the column has none).
* Anything else: stratified k-fold by sequence (label of the sequence = its majority class).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedKFold, KFold

from ..data.dataset import MERDataset
from ..data.validate import DataError


@dataclass(frozen=True)
class Fold:
    """Sequence indices (into ``dataset.sequences``) of one fold."""

    index: int
    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    scheme: str = ""     # session, split or kfold: how the folds were made (stored with results)


def make_folds(dataset: MERDataset, n_folds: int = 5, val_fraction: float = 0.1,
               seed: int = 0, scheme: str = "auto") -> list[Fold]:
    """All folds of a data set.

    Parameters
    ----------
    scheme : {"auto", "session", "split", "kfold"}
        ``auto`` picks ``session`` when a session column exists, else ``split`` when the split
        column is filled, else ``kfold``.
    """
    scheme = fold_scheme(dataset, scheme)
    n_seq = len(dataset.sequences)
    rng = np.random.default_rng([seed, 0xF01D])
    if scheme == "session":
        sess = dataset.sequence_column("session").astype(str)
        if len(set(sess)) < 2:
            raise DataError(f"leave-one-session-out needs at least two sessions; every "
                            f"utterance is in session {sess[0]} — add sessions, or choose "
                            "--folds-scheme kfold (or split)", field="session")
        folds = []
        for i, s in enumerate(sorted(set(sess), key=_natural)):
            test = np.nonzero(sess == s)[0]
            train, val = _carve(np.nonzero(sess != s)[0], val_fraction, rng)
            folds.append(Fold(i, f"session {s}", train, val, test, scheme))
        return folds
    if scheme == "split":
        split = dataset.sequence_column("split").astype(str)
        allowed = {"train", "val", "valid", "test"}
        odd = sorted(set(split) - allowed)
        if odd:
            raise DataError(f"unknown value(s) {', '.join(odd)} in column split; expected "
                            "train, val (or valid) or test on every row", field="split")
        train = np.nonzero(split == "train")[0]
        val = np.nonzero((split == "val") | (split == "valid"))[0]
        test = np.nonzero(split == "test")[0]
        if len(val) == 0:
            train, val = _carve(train, val_fraction, rng)
        if len(train) == 0 or len(test) == 0:
            raise DataError("the split column needs at least one train and one test sequence",
                            field="split")
        return [Fold(0, "official split", train, val, test, scheme)]
    if n_seq < n_folds:
        raise DataError(f"{n_seq} sequences cannot make {n_folds} folds", field="sequence_id")
    folds = []
    if dataset.task == "classification":
        strata = np.array([np.bincount(dataset.labels[s]).argmax() for s in dataset.sequences])
        counts = np.bincount(strata)
        if counts[counts > 0].min() >= n_folds:
            splitter = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
            parts = splitter.split(np.zeros(n_seq), strata)
        else:  # some class too rare to stratify
            parts = KFold(n_folds, shuffle=True, random_state=seed).split(np.zeros(n_seq))
    else:
        parts = KFold(n_folds, shuffle=True, random_state=seed).split(np.zeros(n_seq))
    for i, (tr, te) in enumerate(parts):
        train, val = _carve(tr, val_fraction, rng)
        folds.append(Fold(i, f"fold {i + 1}/{n_folds}", train, val, np.sort(te), scheme))
    return folds


SCHEMES = ("auto", "session", "split", "kfold")


def fold_scheme(dataset: MERDataset, scheme: str = "auto") -> str:
    """The fold scheme ``make_folds`` uses: ``scheme`` itself, checked against the data, or
    for ``auto`` ``session`` when every row has a session, else ``split`` when every row has a
    split, else ``kfold``. A column filled on some rows only is an error naming them: one
    blank cell must not turn leave-one-session-out into k-fold."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown fold scheme {scheme!r}; expected {', '.join(SCHEMES)}")
    filled = {c: _filled(dataset, c) for c in ("session", "split")}
    for column, rows in filled.items():
        if rows is not None and 0 < rows.sum() < len(rows) and scheme in ("auto", column):
            blank = dataset.utterances["utterance_id"].to_numpy()[~rows]
            first = ", ".join(str(u) for u in blank[:5])
            choose = ("choose the folds with --folds-scheme (session, split or kfold)"
                      if scheme == "auto" else "choose another --folds-scheme (kfold works "
                      "for any data)")
            raise DataError(
                f"{len(blank)} of {len(rows)} utterances have no {column} (first: {first}); "
                f"fill the column on every row, empty it on every row, or {choose}",
                field=column)
    if scheme == "auto":
        scheme = next((c for c in ("session", "split")
                       if filled[c] is not None and filled[c].all()), "kfold")
    elif scheme in filled and (filled[scheme] is None or not filled[scheme].any()):
        raise DataError(f"--folds-scheme {scheme}: the data have no {scheme} column values; "
                        "choose another scheme (kfold works for any data)", field=scheme)
    if scheme in filled:
        _check_per_sequence(dataset, scheme)
    return scheme


def _check_per_sequence(dataset: MERDataset, column: str) -> None:
    """A sequence is one unit of the folds: every utterance of it must agree on ``column``
    (and a split must be train, val, valid or test on every row, not only on a sequence's
    first)."""
    table = dataset.utterances
    values = table[column].astype(str).str.strip()
    if column == "split":
        odd = sorted(set(values) - {"train", "val", "valid", "test"})
        if odd:
            first = table["utterance_id"][values.isin(odd)].iloc[0]
            raise DataError(f"unknown value(s) {', '.join(odd)} in column split (first: "
                            f"utterance {first}); expected train, val (or valid) or test on "
                            "every row", field="split")
    per_seq = values.groupby(table["sequence_id"], sort=False).nunique()
    mixed = per_seq[per_seq > 1]
    if len(mixed):
        seq = mixed.index[0]
        found = sorted(set(values[table["sequence_id"] == seq]))
        raise DataError(f"sequence {seq} has utterances in {column} {' and '.join(found)}"
                        f"{f' ({len(mixed)} such sequences)' if len(mixed) > 1 else ''}; "
                        f"expected one {column} per sequence (a sequence is never split "
                        "between folds)", field=column)


def _filled(dataset: MERDataset, column: str) -> np.ndarray | None:
    """Per utterance, whether ``column`` holds a value (None: no such column)."""
    if column not in dataset.utterances:
        return None
    values = dataset.utterances[column]
    return (values.notna() & values.astype(str).str.strip().ne("")).to_numpy()


def _carve(train: np.ndarray, fraction: float, rng: np.random.Generator):
    """Move a seeded ``fraction`` of training sequences (at least one) to validation."""
    if len(train) < 2:
        raise DataError("too few training sequences to carve a validation part",
                        field="sequence_id")
    n_val = max(1, int(round(fraction * len(train))))
    perm = rng.permutation(train)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _natural(s: str):
    return (0, int(s)) if s.isdigit() else (1, s)


def official_train_sequences(dataset: MERDataset) -> tuple[np.ndarray, str]:
    """The data's official training split, as the reference fine-tunes on it: the sequences
    whose ``split`` is ``train`` when every row has a split (CMU-MOSI/MOSEI: ``trainVids``),
    else every session but the last (IEMOCAP's ``trainVid`` = sessions 1-4). Returns the
    sequence positions and a description ("sessions 1, 2, 3, 4")."""
    split = _filled(dataset, "split")
    if split is not None and split.all():
        s = dataset.sequence_column("split").astype(str)
        return np.nonzero(s == "train")[0], "split train"
    if _filled(dataset, "session") is None or not _filled(dataset, "session").all():
        raise DataError("an official training split needs a split column (train/val/test) or "
                        "a session column on every row; use model.finetune_scope=fold",
                        field="session")
    sess = dataset.sequence_column("session").astype(str)
    names = sorted(set(sess), key=_natural)
    if len(names) < 2:
        raise DataError("an official training split needs at least two sessions; use "
                        "model.finetune_scope=fold", field="session")
    return np.nonzero(sess != names[-1])[0], "sessions " + ", ".join(names[:-1])
