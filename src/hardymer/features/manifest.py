"""What to extract: a manifest file (CSV or JSONL) or a folder of media files.

Manifest columns (``utterance_id`` required; an empty cell means "not given")::

    utterance_id, sequence_id, speaker, audio, video, text, start, end, label

``audio``/``video`` are paths (relative ones are taken from the manifest's folder); ``text``
is the transcript itself; ``start``/``end`` are seconds inside the file (for utterances cut
from a longer recording). Other columns are carried into the data set.

A folder is read as one utterance per file stem: ``clip01.wav`` + ``clip01.mp4`` +
``clip01.txt`` (the transcript) make utterance ``clip01``; sub-folders are part of the id
(``ses1/clip01``), and with ``labels_from_folders`` the parent folder's name is the label.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.validate import DataError

COLUMNS = ("utterance_id", "sequence_id", "speaker", "audio", "video", "text", "start", "end",
           "label")
MEDIA_COLUMNS = ("audio", "video", "text")
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".m4a", ".opus", ".aac"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg"}
TEXT_SUFFIXES = {".txt"}


@dataclass
class Manifest:
    """A validated manifest: ``table`` (one row per utterance, columns of COLUMNS as strings,
    ``start``/``end`` as float or NaN, paths resolved) and where it came from."""

    table: pd.DataFrame
    source: Path

    @property
    def labelled(self) -> bool:
        return bool((self.table["label"] != "").any())

    def __len__(self) -> int:
        return len(self.table)


def read_manifest(source: str | Path, labels_from_folders: bool = False) -> Manifest:
    """Read and check a manifest file or a media folder.

    Raises
    ------
    DataError
        Naming the file, the column and what was expected (a missing media file is *not* an
        error here: it is reported per file by the extraction, and the others go on).
    """
    source = Path(source)
    if source.is_dir():
        table, root = _scan_folder(source, labels_from_folders), source
    elif source.is_file():
        table, root = _read_table(source), source.parent
    else:
        raise DataError("not found; expected a manifest (.csv, .tsv, .jsonl) or a folder of "
                        "media files", file=source, field="manifest")
    return Manifest(_check(table, source, root), source)


def _read_table(file: Path) -> pd.DataFrame:
    suffix = file.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            table = pd.read_csv(file, sep="\t" if suffix == ".tsv" else ",", dtype=str,
                                keep_default_na=False)
        elif suffix in (".jsonl", ".ndjson", ".json"):
            table = pd.read_json(file, lines=suffix != ".json", dtype=False)
            table = table.astype(object).where(table.notna(), "").astype(str)
        else:
            raise DataError(f"unknown manifest type {suffix!r}; expected .csv, .tsv or .jsonl",
                            file=file, field="manifest")
    except (ValueError, pd.errors.ParserError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"cannot parse: {err}", file=file, field="manifest") from err
    return table


def _scan_folder(folder: Path, labels_from_folders: bool) -> pd.DataFrame:
    rows: dict[str, dict] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        suffix = path.suffix.lower()
        kind = ("audio" if suffix in AUDIO_SUFFIXES else "video" if suffix in VIDEO_SUFFIXES
                else "text" if suffix in TEXT_SUFFIXES else None)
        if kind is None:
            continue
        uid = path.relative_to(folder).with_suffix("").as_posix()
        row = rows.setdefault(uid, {"utterance_id": uid})
        if kind in row:
            raise DataError(f"two {kind} files for utterance {uid!r} ({Path(row[kind]).name}, "
                            f"{path.name}); expected one per stem", file=path, field=kind)
        # Paths relative to the folder, resolved against it like a manifest's.
        row[kind] = (path.read_text(encoding="utf-8").strip() if kind == "text"
                     else path.relative_to(folder).as_posix())
        if labels_from_folders:
            if path.parent == folder:
                raise DataError("labels_from_folders: expected every file inside a class "
                                "folder (LABEL/name.ext)", file=path, field="label")
            row["label"] = path.parent.name
    if not rows:
        raise DataError("no media files found; expected audio (" + ", ".join(
            sorted(AUDIO_SUFFIXES)) + "), video (" + ", ".join(sorted(VIDEO_SUFFIXES)) +
            ") or .txt transcripts", file=folder, field="manifest")
    return pd.DataFrame(list(rows.values())).fillna("")


def _check(table: pd.DataFrame, file: Path, root: Path) -> pd.DataFrame:
    table = table.copy()
    table.columns = [str(c).strip() for c in table.columns]
    if "utterance_id" not in table:
        raise DataError(f"expected a column 'utterance_id'; found {list(table.columns)}",
                        file=file, field="utterance_id")
    if not any(c in table for c in MEDIA_COLUMNS):
        raise DataError(f"expected at least one of the columns {list(MEDIA_COLUMNS)}; found "
                        f"{list(table.columns)}", file=file, field="audio/video/text")
    for c in COLUMNS:
        if c not in table:
            table[c] = ""
        table[c] = table[c].astype(str).str.strip() if c != "text" else table[c].astype(str)
    ids = table["utterance_id"]
    if (ids == "").any():
        row = int(np.argmax((ids == "").to_numpy()))
        raise DataError(f"empty id in row {row + 1}; expected an id on every row", file=file,
                        field="utterance_id")
    dup = ids[ids.duplicated()]
    if len(dup):
        raise DataError(f"utterance id {dup.iloc[0]!r} appears more than once; expected unique "
                        "ids", file=file, field="utterance_id")
    for c in ("start", "end"):
        raw = table[c]
        num = pd.to_numeric(raw.replace("", np.nan), errors="coerce")
        bad = (raw != "") & (num.isna() | (num < 0))
        if bad.any():
            row = int(np.argmax(bad.to_numpy()))
            raise DataError(f"{raw.iloc[row]!r} for utterance {ids.iloc[row]!r}; expected "
                            "seconds >= 0 or an empty cell", file=file, field=c)
        table[c] = num.astype(float)
    wrong = table["end"] <= table["start"]
    if wrong.any():
        row = int(np.argmax(wrong.to_numpy()))
        raise DataError(f"utterance {ids.iloc[row]!r}: end {table['end'].iloc[row]} <= start "
                        f"{table['start'].iloc[row]}; expected end > start", file=file,
                        field="end")
    for c in ("audio", "video"):
        table[c] = [str((root / p).resolve()) if p and not Path(p).is_absolute() else p
                    for p in table[c]]
    labels = table["label"] != ""
    if labels.any() and not labels.all():
        row = int(np.argmax((~labels).to_numpy()))
        raise DataError(f"utterance {ids.iloc[row]!r} has no label while "
                        f"{int(labels.sum())} others have one; expected a label on every row "
                        "(or none, for features without labels)", file=file, field="label")
    if (table["sequence_id"] == "").all():
        table["sequence_id"] = table["utterance_id"]
    elif (table["sequence_id"] == "").any():
        row = int(np.argmax((table["sequence_id"] == "").to_numpy()))
        raise DataError(f"utterance {ids.iloc[row]!r} has no sequence_id while others do; "
                        "expected one on every row or none", file=file, field="sequence_id")
    return table.reset_index(drop=True)
