"""The generic format: a folder users can write from any tool, safe and memory-mappable.

::

    DATASET/
      dataset.json          {"format": "hardymer-generic", "version": 1, "name": ...,
                             "task": "classification" | "regression",
                             "modalities": {"a": 512, "t": 1024, ...},   # ordered: name -> dim
                             "class_names": [...] | null, "meta": {...}}
      utterances.csv        utterance_id, [sequence_id], [position], [speaker], label, [split],
                            [session], any extra columns   (or utterances.parquet)
      sequences.csv         [optional] sequence_id: every sequence, each must have utterances
      features/<m>.npy      (n_utterances, dim_m) float32, rows in utterances.csv order
      available.npy         [optional] (n_utterances, n_modalities) bool, columns in
                            dataset.json order; absent means everything is available

No pickle anywhere: ``.npy`` files are read with ``allow_pickle=False`` and can be memory-mapped
(``read_generic(path, mmap=True)``), so a data set larger than memory still loads instantly.

Example
-------
>>> ds = read_generic("data/my-set")                       # doctest: +SKIP
>>> write_generic(ds, "data/my-set-copy")                   # doctest: +SKIP
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..fileio import atomic_folder
from .dataset import MERDataset
from .validate import (DataError, check_labels, check_mask, check_matrix, check_unique, load_json,
                       load_npy, load_table, without_empty_utterances)

FORMAT = "hardymer-generic"
VERSION = 1
# Identifier-like columns are read as text so that "001" stays "001" and "" stays "".
STRING_COLUMNS = ("utterance_id", "sequence_id", "speaker", "split")
TASKS = ("classification", "regression")
# Modality names become file names and condition parts ("audio+text"): keep them plain.
MODALITY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")


# --- writing ---------------------------------------------------------------------------------

def write_generic(dataset: MERDataset, path: str | Path, overwrite: bool = False) -> Path:
    """Write a data set as a generic folder, atomically.

    Everything is written into a temporary sibling folder that is renamed into place at the
    end, so a failure (full disk, interrupt) never leaves a half-written data set behind.

    Parameters
    ----------
    dataset : MERDataset
    path : str or Path
        Folder to create.
    overwrite : bool
        Replace an existing non-empty folder (the swap is done by renames, so readers see the
        old or the new data set, never a mixture).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    FileExistsError
        ``path`` exists and is not an empty folder, and ``overwrite`` is False.
    """
    path = Path(path)
    for m in dataset.modalities:
        if not MODALITY_NAME.fullmatch(m):
            raise ValueError(f"modality name {m!r}: expected letters, digits, '_' or '-'")
    if path.exists() and not overwrite and not _is_empty_dir(path):
        raise FileExistsError(f"{path} already exists and is not empty; pass overwrite=True "
                              "(--overwrite on the command line) to replace it")
    with atomic_folder(path) as tmp:
        write_contents(dataset, tmp)
    return path


def write_contents(ds: MERDataset, folder: Path) -> None:
    """The generic format's files of ``ds`` into an empty ``folder`` (no atomicity: callers
    write into a temporary folder, see :func:`hardymer.fileio.atomic_folder`)."""
    header = {
        "format": FORMAT, "version": VERSION, "name": ds.name, "task": ds.task,
        "modalities": {m: int(ds.features[m].shape[1]) for m in ds.modalities},
        "class_names": list(ds.class_names) if ds.class_names is not None else None,
        "meta": ds.meta,
    }
    (folder / "dataset.json").write_text(json.dumps(header, indent=2, default=_to_json) + "\n")
    _utterance_table(ds).to_csv(folder / "utterances.csv", index=False)
    pd.DataFrame({"sequence_id": [str(s) for s in ds.sequence_ids]}).to_csv(
        folder / "sequences.csv", index=False)
    (folder / "features").mkdir()
    available = np.asarray(ds.available, dtype=bool)
    for m_i, m in enumerate(ds.modalities):
        # A copy in float32 with unavailable rows zeroed: the file never carries stale values.
        feats = np.array(ds.features[m], dtype=np.float32)
        feats[~available[:, m_i]] = 0.0
        np.save(folder / "features" / f"{m}.npy", feats)
    np.save(folder / "available.npy", available)


def _utterance_table(ds: MERDataset) -> pd.DataFrame:
    """utterances.csv columns: the known ones first, label after speaker, extras last."""
    table = ds.utterances.reset_index(drop=True).copy()
    table["label"] = np.asarray(ds.labels)
    first = ["utterance_id", "sequence_id", "position", "speaker", "label", "split", "session"]
    cols = [c for c in first if c in table] + [c for c in table if c not in first]
    return table[cols]


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def _to_json(o):
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if hasattr(o, "tolist"):  # numpy arrays
        return o.tolist()
    if isinstance(o, (Path, set, frozenset)):
        return str(o) if isinstance(o, Path) else sorted(o)
    raise TypeError(f"meta value of type {type(o).__name__} is not JSON serialisable")


# --- reading ---------------------------------------------------------------------------------

def read_generic(path: str | Path, mmap: bool = False) -> MERDataset:
    """Read and validate a generic folder.

    Parameters
    ----------
    path : str or Path
        The folder holding ``dataset.json``.
    mmap : bool
        Memory-map the feature matrices read-only instead of loading them. (A matrix that is not
        float32, or whose unavailable rows are not zero, is loaded into memory anyway.)

    Returns
    -------
    MERDataset

    Raises
    ------
    DataError
        Naming the file, the field, what was expected and what was found.
    """
    path = Path(path)
    header = _read_header(path / "dataset.json")
    modalities = tuple(header["modalities"])
    table, labels_raw, table_file = _read_utterances(path)
    n = len(table)
    ids = table["utterance_id"].to_numpy()
    available = _read_available(path / "available.npy", n, len(modalities))
    features = {m: _read_features(path / "features" / f"{m}.npy", m, header["modalities"][m], n,
                                  available[:, i], ids, mmap)
                for i, m in enumerate(modalities)}
    class_names = header.get("class_names")
    n_classes = len(class_names) if class_names else None
    labels = check_labels(labels_raw, header["task"], n_classes, table_file, "label", ids)
    _check_sequences(path / "sequences.csv", table)
    ds = MERDataset(
        name=str(header.get("name") or path.name), task=header["task"], modalities=modalities,
        features=features, available=available, labels=labels, utterances=table,
        class_names=tuple(class_names) if class_names else None,
        meta=dict(header.get("meta") or {}))
    ds = without_empty_utterances(ds, path / "available.npy")
    # What the data were read from, for data/fingerprint.py (an attribute, not a field:
    # a data set derived with dataclasses.replace does not inherit it).
    parts = ["dataset.json", table_file.name, "sequences.csv", "available.npy"] + \
        [f"features/{m}.npy" for m in modalities]
    ds.source_files = {p: path / p for p in parts if (path / p).is_file()}
    return ds


def _read_header(file: Path) -> dict:
    if not file.is_file():
        raise DataError("file not found; a generic data set folder needs dataset.json "
                        "(see `hardymer convert` / `hardymer synth` for examples)",
                        file=file, field="dataset.json")
    header = load_json(file, field="header")
    if not isinstance(header, dict):
        raise DataError(f"expected a JSON object, got {type(header).__name__}", file=file)
    if header.get("format") != FORMAT:
        raise DataError(f"expected format {FORMAT!r}, got {header.get('format')!r}",
                        file=file, field="format")
    version = header.get("version", VERSION)
    if not isinstance(version, int) or version > VERSION:
        raise DataError(f"expected version <= {VERSION}, got {version!r} (written by a newer "
                        "hardymer?)", file=file, field="version")
    if header.get("task") not in TASKS:
        raise DataError(f"expected one of {', '.join(TASKS)}, got {header.get('task')!r}",
                        file=file, field="task")
    mods = header.get("modalities")
    if not isinstance(mods, dict) or not mods:
        raise DataError(f"expected a non-empty object {{name: dim}}, got {mods!r}",
                        file=file, field="modalities")
    for m, dim in mods.items():
        if not MODALITY_NAME.fullmatch(m):
            raise DataError(f"expected modality names of letters, digits, '_' or '-', got {m!r}",
                            file=file, field="modalities")
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise DataError(f"expected a positive integer dimension for modality {m!r}, got "
                            f"{dim!r}", file=file, field="modalities")
    names = header.get("class_names")
    if names is not None and (not isinstance(names, list) or not names):
        raise DataError(f"expected a non-empty list of class names or null, got {names!r}",
                        file=file, field="class_names")
    if names is not None and header["task"] == "regression":
        raise DataError("expected null class_names for a regression task", file=file,
                        field="class_names")
    return header


def _read_utterances(folder: Path) -> tuple[pd.DataFrame, np.ndarray, Path]:
    """The utterance table with defaults filled in, the raw labels, and the file read."""
    csv, parquet = folder / "utterances.csv", folder / "utterances.parquet"
    if csv.is_file() and parquet.is_file():
        raise DataError("found both utterances.csv and utterances.parquet; expected one",
                        file=folder, field="utterances")
    file = parquet if parquet.is_file() and not csv.is_file() else csv
    if not file.is_file():
        raise DataError("file not found; expected utterances.csv (or utterances.parquet) with "
                        "one row per utterance", file=file, field="utterances")
    table = load_table(file, STRING_COLUMNS, field="utterances")
    for col in ("utterance_id", "label"):
        if col not in table:
            raise DataError(f"expected a column {col!r}; found columns {list(table.columns)}",
                            file=file, field=col)
    if len(table) == 0:
        raise DataError("expected at least one utterance, found none", file=file,
                        field="utterance_id")
    if (table["utterance_id"] == "").any():
        row = int(np.argmax(table["utterance_id"].to_numpy() == ""))
        raise DataError(f"empty id in row {row}; expected a non-empty id for every utterance",
                        file=file, field="utterance_id")
    check_unique(table["utterance_id"], file, "utterance_id")
    if table["label"].isna().any():
        row = int(np.argmax(table["label"].isna().to_numpy()))
        raise DataError(f"missing label for utterance {table['utterance_id'].iloc[row]!r}; "
                        "expected a label on every row", file=file, field="label")
    numeric = pd.to_numeric(table["label"], errors="coerce")
    if numeric.isna().any():
        row = int(np.argmax(numeric.isna().to_numpy()))
        raise DataError(f"label {table['label'].iloc[row]!s} of utterance "
                        f"{table['utterance_id'].iloc[row]!r} (row {row}) is not a number; "
                        "expected numeric labels (class ids, or values for regression)",
                        file=file, field="label")
    labels = numeric.to_numpy(dtype=np.float64)
    table.pop("label")
    _fill_sequences(table, file)
    for col in ("speaker", "split"):
        if col not in table:
            table[col] = ""
    return table.reset_index(drop=True), labels, file


def _fill_sequences(table: pd.DataFrame, file: Path) -> None:
    """Default ``sequence_id`` (each utterance alone) and ``position`` (row order), in place."""
    if "sequence_id" not in table or (table["sequence_id"] == "").all():
        # No grouping: every utterance is a sequence of length one.
        table["sequence_id"] = table["utterance_id"]
    empty = table["sequence_id"] == ""
    if empty.any():
        uid = table["utterance_id"][empty].iloc[0]
        raise DataError(f"{int(empty.sum())} row(s) without a sequence id (first: utterance "
                        f"{uid!r}); expected a sequence id on every row when any row has one",
                        file=file, field="sequence_id")
    if "position" not in table:
        table["position"] = table.groupby("sequence_id", sort=False).cumcount()
        return
    pos = pd.to_numeric(table["position"], errors="coerce")
    bad = pos.isna() | (pos < 0) | (pos != np.round(pos))
    if bad.any():
        row = int(np.argmax(bad.to_numpy()))
        raise DataError(f"position {table['position'].iloc[row]!r} of utterance "
                        f"{table['utterance_id'].iloc[row]!r}; expected a non-negative integer "
                        "on every row (or no position column)", file=file, field="position")
    table["position"] = pos.astype(np.int64)
    dup = table.duplicated(["sequence_id", "position"])
    if dup.any():
        row = int(np.argmax(dup.to_numpy()))
        raise DataError(f"utterance {table['utterance_id'].iloc[row]!r} repeats position "
                        f"{table['position'].iloc[row]} of sequence "
                        f"{table['sequence_id'].iloc[row]!r}; expected distinct positions "
                        "within a sequence", file=file, field="position")


def _read_available(file: Path, n: int, n_modalities: int) -> np.ndarray:
    if not file.exists():
        return np.ones((n, n_modalities), dtype=bool)
    mask = load_npy(file, "available")
    check_mask(mask, file, "available", (n, n_modalities))
    return np.ascontiguousarray(mask)


def _read_features(file: Path, modality: str, dim: int, n: int, available: np.ndarray, ids,
                   mmap: bool) -> np.ndarray:
    if not file.is_file():
        raise DataError(f"file not found; expected the ({n}, {dim}) feature matrix of modality "
                        f"{modality!r} listed in dataset.json", file=file, field=modality)
    feats = load_npy(file, modality, mmap=mmap)
    check_matrix(feats, file, modality, n_rows=n, dim=dim, rows_to_check=available, ids=ids)
    if feats.dtype != np.float32:
        feats = feats.astype(np.float32)  # a copy in memory, whatever mmap asked for
    hidden = ~available
    if hidden.any() and np.any(feats[hidden] != 0):
        # Unavailable rows may hold anything on disk (NaN included); zero them in memory.
        feats = np.array(feats)
        feats[hidden] = 0.0
    return feats


def _check_sequences(file: Path, table: pd.DataFrame) -> None:
    """With a sequences.csv: every listed sequence has utterances and vice versa."""
    if not file.exists():
        return
    listed = load_table(file, ("sequence_id",))
    if "sequence_id" not in listed:
        raise DataError(f"expected a column 'sequence_id'; found {list(listed.columns)}",
                        file=file, field="sequence_id")
    check_unique(listed["sequence_id"], file, "sequence_id")
    used = set(table["sequence_id"])
    empty = [s for s in listed["sequence_id"] if s not in used]
    if empty:
        raise DataError(f"sequence {empty[0]!r} has no utterances in the utterance table"
                        f"{f' ({len(empty)} such sequences)' if len(empty) > 1 else ''}; "
                        "expected at least one utterance per listed sequence",
                        file=file, field="sequence_id")
    unlisted = sorted(used - set(listed["sequence_id"]))
    if unlisted:
        raise DataError(f"sequence {unlisted[0]!r} of the utterance table is not listed; "
                        "expected every sequence of utterances.csv here", file=file,
                        field="sequence_id")
