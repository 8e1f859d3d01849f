"""Checks at the data boundary. Every loader validates here once; inside, data is trusted.

Errors name the file, the field, what was expected and what arrived.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd


class DataWarning(UserWarning):
    """Data that load, but not all of it: what was left out and why."""


class DataError(ValueError):
    """Bad input data: the message names the file, the field, expected and found."""

    def __init__(self, message: str, file: str | Path | None = None, field: str | None = None):
        self.file = str(file) if file is not None else None
        self.field = field
        self.detail = message
        where = " ".join(p for p in (
            f"{self.file}:" if self.file else "",
            f"[{field}]" if field else "") if p)
        super().__init__(f"{where} {message}".strip())


def load_npy(path: Path, field: str, mmap: bool = False) -> np.ndarray:
    """``np.load`` without pickle, turning truncated/corrupt files into a DataError."""
    if not path.is_file():
        raise DataError("file not found", file=path, field=field)
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"cannot read as a .npy array (truncated or corrupt?): {err}",
                        file=path, field=field) from err


def check_matrix(arr: np.ndarray, file: str | Path, field: str, n_rows: int | None = None,
                 dim: int | None = None, rows_to_check: np.ndarray | None = None,
                 ids=None) -> None:
    """A finite 2-D float matrix with the expected shape.

    ``rows_to_check`` (bool mask or indices) restricts the finiteness check to rows that are
    marked available (values of unavailable rows are never read). ``ids`` (one per row) names
    the first bad utterance in the message.
    """
    if arr.ndim != 2:
        raise DataError(f"expected a 2-D array (utterances, dim), got shape {arr.shape}",
                        file=file, field=field)
    if n_rows is not None and arr.shape[0] != n_rows:
        raise DataError(f"expected {n_rows} rows (one per utterance), got {arr.shape[0]}",
                        file=file, field=field)
    if dim is not None and arr.shape[1] != dim:
        raise DataError(f"expected dimension {dim}, got {arr.shape[1]}", file=file, field=field)
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"expected a numeric array, got dtype {arr.dtype}", file=file, field=field)
    rows = np.arange(arr.shape[0]) if rows_to_check is None else np.asarray(rows_to_check)
    if rows.dtype == bool:
        rows = np.flatnonzero(rows)
    # Report the real row (or utterance id), not the position inside the checked subset.
    names = rows if ids is None else np.asarray(ids, dtype=object)[rows]
    for start in range(0, len(rows), _CHUNK_ROWS):  # chunks: a memory map stays on disk
        part = rows[start:start + _CHUNK_ROWS]
        check_finite(arr[part], file, field, ids=names[start:start + _CHUNK_ROWS],
                     _label="utterance" if ids is not None else "row")


# Rows per finiteness check: bounds the float64 copy made while scanning a large matrix.
_CHUNK_ROWS = 8192


def check_finite(arr: np.ndarray, file: str | Path, field: str, ids=None,
                 _label: str = "utterance") -> None:
    """No NaN or inf anywhere in ``arr``; ``ids`` (one per row) name the first bad row."""
    bad = ~np.isfinite(np.asarray(arr, dtype=np.float64))
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        what = f"{_label} {ids[row]!r}" if ids is not None else f"row {row}"
        n_bad = int(bad.any(axis=-1).sum()) if bad.ndim > 1 else int(bad.sum())
        raise DataError(f"{n_bad} row(s) hold NaN or inf values (first: {what}); expected finite "
                        "values — mark the modality unavailable instead", file=file, field=field)


def check_labels(labels: np.ndarray, task: str, n_classes: int | None, file, field="label",
                 ids=None) -> np.ndarray:
    """Class ids in [0, n_classes) or finite floats; returns the typed array."""
    if task == "classification":
        vals = np.asarray(labels, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(vals) | (vals != np.round(vals))
        if bad.any():
            row = int(np.argmax(bad))
            who = f"utterance {ids[row]!r} (row {row})" if ids is not None else f"row {row}"
            raise DataError(f"label {np.asarray(labels)[row]!s} of {who} is not an integer "
                            f"class id ({int(bad.sum())} such label(s)); expected integer class "
                            "ids for a classification task", file=file, field=field)
        vals = vals.astype(np.int64)
        high = n_classes if n_classes is not None else np.iinfo(np.int64).max
        bad = (vals < 0) | (vals >= high)
        if bad.any():
            row = int(np.argmax(bad))
            who = f"utterance {ids[row]!r}" if ids is not None else f"row {row}"
            expected = (f"in [0, {n_classes - 1}]" if n_classes is not None
                        else "that is a non-negative integer")
            raise DataError(f"label {vals[row]} out of range for {who}; expected a class id "
                            f"{expected}", file=file, field=field)
        return vals
    vals = np.asarray(labels, dtype=np.float32)
    check_finite(vals, file, field, ids)
    return vals


def check_unique(values, file: str | Path, field: str) -> None:
    """No value occurs twice (utterance ids, sequence ids)."""
    values = pd.Series(values)
    dup = values[values.duplicated()]
    if len(dup):
        raise DataError(f"{len(dup)} duplicate value(s) (first: {dup.iloc[0]!r}); expected each "
                        f"{field} once", file=file, field=field)


def check_mask(arr: np.ndarray, file: str | Path, field: str, shape: tuple[int, ...]) -> None:
    """A boolean array of exactly ``shape``."""
    if arr.dtype != np.bool_:
        raise DataError(f"expected dtype bool, got {arr.dtype} (save it with "
                        "mask.astype(bool))", file=file, field=field)
    if arr.shape != tuple(shape):
        raise DataError(f"expected shape {tuple(shape)}, got {arr.shape}", file=file, field=field)


def load_json(path: Path, field: str | None = None):
    """``json.load`` turning a missing or unparsable file into a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", file=path, field=field)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise DataError(f"cannot parse as JSON: {err}", file=path, field=field) from err


# pandas' usual missing-value spellings; applied only to columns that are not identifiers.
_NA_STRINGS = ["", "nan", "NaN", "NA", "N/A", "n/a", "null", "NULL", "None", "<NA>"]


def load_table(path: Path, string_columns: tuple[str, ...] = (),
               field: str | None = None) -> pd.DataFrame:
    """Read a CSV (or Parquet) table as a DataFrame, errors as DataError naming the file.

    Columns in ``string_columns`` are read as text, verbatim: ``"001"`` stays ``"001"`` and an
    empty cell is ``""`` (not NaN). Other columns get pandas' type inference.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", file=path, field=field)
    if path.suffix == ".parquet":
        return _load_parquet(path, string_columns, field)
    try:
        header = pd.read_csv(path, nrows=0).columns
        text = [c for c in header if c in string_columns]
        na = {c: _NA_STRINGS for c in header if c not in string_columns}
        # keep_default_na=False + per-column na_values: identifiers never turn into NaN.
        table = pd.read_csv(path, dtype={c: str for c in text}, keep_default_na=False,
                            na_values=na)
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as err:
        # EmptyDataError and ParserError are ValueErrors; listed for the reader's sake.
        raise DataError(f"cannot parse as CSV: {err}", file=path, field=field) from err
    return table


def _load_parquet(path: Path, string_columns: tuple[str, ...], field: str | None):
    try:
        import pyarrow  # noqa: F401  (pandas' Parquet engine)
    except ImportError as err:
        raise DataError("reading Parquet needs the pyarrow package: `pip install pyarrow`, or "
                        "save the table as utterances.csv instead", file=path,
                        field=field) from err
    try:
        table = pd.read_parquet(path)
    except (ValueError, OSError) as err:
        raise DataError(f"cannot read as Parquet: {err}", file=path, field=field) from err
    for c in string_columns:
        if c in table:
            table[c] = table[c].fillna("").astype(str)
    return table


def without_empty_utterances(dataset, file: str | Path):
    """``dataset`` without utterances that have no available modality, with a DataWarning
    naming how many and the first ids; the count goes to ``meta["dropped_no_modality"]``
    (added to any count the file already records) and from there into every table header.

    Such rows carry no input at all: trained on, they teach the label prior; scored, they
    are guesses that drag every condition's metrics down alike."""
    empty = ~np.asarray(dataset.available).any(axis=1)
    if not empty.any():
        return dataset
    ids = dataset.utterances["utterance_id"].to_numpy()[empty]
    warnings.warn(DataWarning(
        f"{file}: {int(empty.sum())} utterance(s) have no available modality (first: "
        f"{', '.join(str(u) for u in ids[:5])}); left out of training and scoring"),
        stacklevel=3)
    out = dataset.select_utterances(~empty)
    out.meta["dropped_no_modality"] = int(dataset.meta.get("dropped_no_modality", 0)) + \
        int(empty.sum())
    return out
