"""A lazy row selection of a matrix: ``RowView(x, rows)[i] == x[rows[i]]`` without the copy.

A fold's complete training samples are a scattered subset of the data set's rows. Indexing a
memory map with them (``x[rows]``) would copy that subset into memory, N × d floats; a
``RowView`` keeps the map and the row numbers, and reads only the rows a caller asks for (a
FAISS build reads it in chunks, a search re-ranks a few candidates). Row-indexed access only.
"""
from __future__ import annotations

import numpy as np


class RowView:
    """Rows ``rows`` of ``base`` (n, d), read on indexing.

    Parameters
    ----------
    base : ndarray or np.memmap, shape (n, d)
    rows : ndarray of int, shape (R,)

    Attributes
    ----------
    shape : (R, d)
    dtype, ndim : those of ``base``
    """

    def __init__(self, base: np.ndarray, rows: np.ndarray) -> None:
        rows = np.asarray(rows, np.int64)
        if rows.ndim != 1:
            raise ValueError(f"rows must be 1-D, got shape {rows.shape}")
        if len(rows) and (rows.min() < 0 or rows.max() >= base.shape[0]):
            raise IndexError(f"rows outside [0, {base.shape[0]})")
        self.base, self.rows = base, rows
        self.shape = (len(rows),) + tuple(base.shape[1:])
        self.dtype, self.ndim = base.dtype, base.ndim

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        """``base[rows[index]]`` for an int, a slice or an integer array (a copy)."""
        if isinstance(index, tuple):
            raise TypeError("a RowView is indexed by rows only")
        return np.asarray(self.base[self.rows[index]])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """The whole selection, materialised (what ``np.asarray`` gives)."""
        out = np.asarray(self.base[self.rows])
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"RowView({type(self.base).__name__} {self.base.shape}, {len(self.rows)} rows)"
