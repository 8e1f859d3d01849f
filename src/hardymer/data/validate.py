"""Checks at the data boundary. Every loader validates here once; inside, data is trusted.

Errors name the file, the field, what was expected and what arrived.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


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
                 dim: int | None = None, rows_to_check: np.ndarray | None = None) -> None:
    """A finite 2-D float matrix with the expected shape.

    ``rows_to_check`` restricts the finiteness check to rows that are marked available
    (values of unavailable rows are never read).
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
    check_finite(arr if rows_to_check is None else arr[rows_to_check], file, field)


def check_finite(arr: np.ndarray, file: str | Path, field: str, ids=None) -> None:
    bad = ~np.isfinite(np.asarray(arr, dtype=np.float64))
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        what = f"utterance {ids[row]!r}" if ids is not None else f"row {row}"
        raise DataError(f"{int(bad.any(axis=-1).sum()) if bad.ndim > 1 else int(bad.sum())} "
                        f"row(s) hold NaN or inf values (first: {what}); expected finite features"
                        " — mark the modality unavailable instead", file=file, field=field)


def check_labels(labels: np.ndarray, task: str, n_classes: int | None, file, field="label",
                 ids=None) -> np.ndarray:
    """Class ids in [0, n_classes) or finite floats; returns the typed array."""
    if task == "classification":
        vals = np.asarray(labels, dtype=np.float64)
        if not np.all(np.isfinite(vals)) or not np.all(vals == np.round(vals)):
            raise DataError("expected integer class ids for a classification task",
                            file=file, field=field)
        vals = vals.astype(np.int64)
        if n_classes is not None:
            bad = (vals < 0) | (vals >= n_classes)
            if bad.any():
                row = int(np.argmax(bad))
                who = f"utterance {ids[row]!r}" if ids is not None else f"row {row}"
                raise DataError(f"label {vals[row]} out of range for {who}; expected a class id "
                                f"in [0, {n_classes - 1}]", file=file, field=field)
        return vals
    vals = np.asarray(labels, dtype=np.float32)
    check_finite(vals, file, field, ids)
    return vals
