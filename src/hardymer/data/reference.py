"""The reference layout of the field's public features (GCNet pipeline): IEMOCAP, CMU-MOSI/MOSEI.

A root holds a label pickle and one folder of per-utterance ``.npy`` files per modality::

    ROOT/
      IEMOCAP_features_raw_4way.pkl   (or _6way, CMUMOSI_features_raw_2way.pkl, CMUMOSEI_...)
      wav2vec-large-c-UTT/{uid}.npy   audio  (a)
      deberta-large-4-UTT/{uid}.npy   text   (t)
      manet_UTT/{uid}.npy             video  (v); IEMOCAP: manet_UTT/{uid}/compress_{F,M}.npy

(The feature folders may also sit under ``ROOT/features/``, as in the GCNet/MoMKE repos.)

Rules, following the reference code except where it loses information:

* a 2-D array ``(frames, dim)`` is averaged over frames, a 1-D array is used as is;
* an IEMOCAP utterance takes the face track of its own speaker (the first letter of the last
  ``_`` field of its id: ``Ses01F_impro01_M001`` -> ``compress_M.npy``);
* an empty or absent face track is a zero vector **recorded as missing** (the reference code
  keeps the zeros as if they were data); the same holds for any empty array;
* an absent audio or text file is an error naming the file, unless ``missing_ok=True``.

The label pickle is only read with ``allow_pickle=True``: unpickling can run arbitrary code.
:func:`convert` turns the layout into the safe generic format once.
"""
from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .dataset import MERDataset
from .generic import write_generic
from .validate import (DataError, check_finite, check_labels, check_unique, load_npy,
                       without_empty_utterances)

MODALITIES = ("a", "t", "v")
FEATURE_DIRS = {"a": "wav2vec-large-c-UTT", "t": "deberta-large-4-UTT", "v": "manet_UTT"}
PICKLE_RISK = ("pickle files can execute arbitrary code when loaded; only load one from a "
               "source you trust, by passing allow_pickle=True in Python or --trust-pickle on "
               "the command line (then `hardymer convert` it once to the safe generic format)")


@dataclass(frozen=True)
class Kind:
    """What distinguishes one reference data set from another."""

    name: str
    family: str
    label_file: str
    fields: tuple[str, ...]  # names of the pickle's items, in order
    class_names: tuple[str, ...] | None

    @property
    def is_iemocap(self) -> bool:
        return self.family == "iemocap"


_IEMOCAP_FIELDS = ("videoIDs", "videoLabels", "videoSpeakers", "videoSentence", "trainVid",
                   "testVid")
_CMU_FIELDS = ("videoIDs", "videoLabels", "videoSpeakers", "videoSentences", "trainVids",
               "valVids", "testVids")
KINDS = {
    "iemocap4": Kind("iemocap4", "iemocap", "IEMOCAP_features_raw_4way.pkl", _IEMOCAP_FIELDS,
                     ("happy", "sad", "neutral", "angry")),  # 0 = happy + excited
    "iemocap6": Kind("iemocap6", "iemocap", "IEMOCAP_features_raw_6way.pkl", _IEMOCAP_FIELDS,
                     ("happy", "sad", "neutral", "angry", "excited", "frustrated")),
    "mosi": Kind("mosi", "mosi", "CMUMOSI_features_raw_2way.pkl", _CMU_FIELDS, None),
    "mosei": Kind("mosei", "mosei", "CMUMOSEI_features_raw_2way.pkl", _CMU_FIELDS, None),
}
LABEL_FILE_GLOB = "*_features_raw_*.pkl"


# --- locating files --------------------------------------------------------------------------

def kind_from_name(name: str) -> str | None:
    """The kind a label pickle's file name announces, or None.

    >>> kind_from_name("IEMOCAP_features_raw_4way.pkl"), kind_from_name("CMUMOSI_x.pkl")
    ('iemocap4', 'mosi')
    """
    if name.startswith("IEMOCAP_"):
        return "iemocap4" if "_4way" in name else "iemocap6" if "_6way" in name else None
    if name.startswith("CMUMOSI_"):
        return "mosi"
    if name.startswith("CMUMOSEI_"):
        return "mosei"
    return None


def find_label_file(root: str | Path, kind: str = "auto") -> tuple[Path, str]:
    """The label pickle under ``root`` (or ``root`` itself when it is a ``.pkl``) and its kind."""
    root = Path(root)
    if kind != "auto" and kind not in KINDS:
        raise DataError(f"unknown kind {kind!r}; expected auto or one of {', '.join(KINDS)}",
                        field="kind")
    if root.is_file():
        candidates = [root]
    elif root.is_dir():
        candidates = sorted(root.glob(LABEL_FILE_GLOB))
    else:
        raise DataError("no such file or folder; expected a reference root holding a label "
                        f"pickle ({LABEL_FILE_GLOB})", file=root)
    if kind != "auto":
        named = [p for p in candidates if p.name == KINDS[kind].label_file]
        matching = named or [p for p in candidates if kind_from_name(p.name) == kind]
        # A file given explicitly is trusted to be of the requested kind whatever its name.
        matching = matching or (candidates if root.is_file() else [])
    else:
        matching = [p for p in candidates if kind_from_name(p.name)]
    if len(matching) != 1:
        found = ", ".join(p.name for p in candidates) or "none"
        want = KINDS[kind].label_file if kind != "auto" else \
            ", ".join(k.label_file for k in KINDS.values())
        raise DataError(f"expected exactly one label pickle ({want}); found {found}"
                        + ("; pass kind=... to choose" if len(matching) > 1 else ""),
                        file=root, field="kind")
    label_file = matching[0]
    kind = kind if kind != "auto" else kind_from_name(label_file.name)
    if kind is None:
        raise DataError("cannot tell the data set from the file name; expected one of "
                        f"{', '.join(k.label_file for k in KINDS.values())}, or pass kind=",
                        file=label_file, field="kind")
    return label_file, kind


def _feature_dir(root: Path, modality: str, feature_dirs: dict | None) -> Path:
    name = (feature_dirs or {}).get(modality, FEATURE_DIRS[modality])
    tried = [Path(name)] if Path(name).is_absolute() else [root / name, root / "features" / name]
    for folder in tried:
        if folder.is_dir():
            return folder
    raise DataError(f"feature folder not found; expected one of {', '.join(map(str, tried))}",
                    file=tried[0], field=modality)


# --- the label pickle ------------------------------------------------------------------------

def load_label_pickle(path: Path, kind: str, allow_pickle: bool = False) -> dict:
    """Unpickle and validate the label file; returns its items by field name."""
    spec = KINDS[kind]
    if not allow_pickle:
        raise DataError(f"refusing to read a pickle: {PICKLE_RISK}", file=path,
                        field="allow_pickle")
    try:
        with open(path, "rb") as f:
            items = pickle.load(f, encoding="latin1")
    except Exception as err:  # unpickling can fail in many ways (missing classes, truncation)
        raise DataError(f"cannot unpickle: {type(err).__name__}: {err}", file=path) from err
    if not isinstance(items, (list, tuple)) or len(items) != len(spec.fields):
        found = f"{type(items).__name__} of {len(items)} items" \
            if isinstance(items, (list, tuple)) else type(items).__name__
        raise DataError(f"expected a list of {len(spec.fields)} items ({', '.join(spec.fields)})"
                        f" for {kind}; found a {found}", file=path, field="pickle")
    data = dict(zip(spec.fields, items))
    for name in spec.fields[:4]:
        if not isinstance(data[name], dict):
            raise DataError(f"expected a dict (sequence -> list), got {type(data[name]).__name__}",
                            file=path, field=name)
    for name in spec.fields[4:]:
        if not isinstance(data[name], (set, frozenset, list, tuple, dict)):
            raise DataError(f"expected a set of sequence ids, got {type(data[name]).__name__}",
                            file=path, field=name)
    for vid, uids in data["videoIDs"].items():
        if not isinstance(uids, (list, tuple, np.ndarray)) or len(uids) == 0:
            raise DataError(f"sequence {vid!r}: expected a non-empty list of utterance ids",
                            file=path, field="videoIDs")
        labels = data["videoLabels"].get(vid)
        if labels is None or np.size(labels) != len(uids):
            raise DataError(f"sequence {vid!r}: expected {len(uids)} labels, found "
                            f"{'none' if labels is None else np.size(labels)}",
                            file=path, field="videoLabels")
    return data


def _utterance_table(data: dict, spec: Kind, path: Path, transcripts: bool = False
                     ) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per utterance, sequences in the pickle's order; and the labels. With
    ``transcripts``, a ``transcript`` column from the pickle's sentences."""
    rows, labels = [], []
    sentences = data[spec.fields[3]]
    split_of = _split_of(data, spec, path) if not spec.is_iemocap else {}
    for vid, uids in data["videoIDs"].items():
        speakers = _speakers(data["videoSpeakers"].get(vid), len(uids), vid, spec, path)
        session = _session(vid, path) if spec.is_iemocap else None
        for pos, (uid, spk) in enumerate(zip(uids, speakers)):
            row = dict(utterance_id=str(uid), sequence_id=str(vid), position=pos, speaker=spk,
                       split=split_of.get(vid, ""))
            if spec.is_iemocap:
                row["session"] = session
            if transcripts:
                row["transcript"] = _sentence(sentences, vid, pos, len(uids), spec, path)
            rows.append(row)
        labels.append(np.asarray(data["videoLabels"][vid], dtype=np.float64).reshape(-1))
    table = pd.DataFrame(rows)
    check_unique(table["utterance_id"], path, "videoIDs")
    return table, np.concatenate(labels)


def _sentence(sentences: dict, vid, pos: int, n: int, spec: Kind, path: Path) -> str:
    got = sentences.get(vid)
    if got is None or len(got) != n:
        raise DataError(f"sequence {vid!r}: expected {n} sentences, found "
                        f"{'none' if got is None else len(got)}", file=path,
                        field=spec.fields[3])
    s = got[pos]
    return s.decode("utf-8", "replace") if isinstance(s, bytes) else str(s or "").strip()


def _speakers(raw, n: int, vid, spec: Kind, path: Path) -> list[str]:
    if spec.is_iemocap:
        if raw is None or len(raw) != n:
            raise DataError(f"sequence {vid!r}: expected {n} speakers ('F'/'M'), found "
                            f"{'none' if raw is None else len(raw)}", file=path,
                            field="videoSpeakers")
        return [str(s) for s in raw]
    # CMU pickles carry no speakers (empty entries); keep any that happen to be there.
    if raw is None or len(raw) != n:
        return [""] * n
    return [s if isinstance(s, str) else "" for s in raw]


def _session(vid, path: Path) -> int:
    vid = str(vid)
    if not re.match(r"Ses\d\d", vid):
        raise DataError(f"dialogue id {vid!r}: expected an IEMOCAP id such as 'Ses01F_impro01' "
                        "(the session is its fifth character)", file=path, field="videoIDs")
    return int(vid[4])


def _split_of(data: dict, spec: Kind, path: Path) -> dict:
    """Sequence id -> "train" / "val" / "test" from the pickle's three sets."""
    split_of: dict = {}
    for field, split in zip(spec.fields[4:], ("train", "val", "test")):
        for vid in data[field]:
            if vid in split_of:
                raise DataError(f"video {vid!r} is in both {split_of[vid]} and {split}; expected "
                                "each video in one split", file=path, field=field)
            split_of[vid] = split
    lost = [vid for vid in data["videoIDs"] if vid not in split_of]
    if lost:
        raise DataError(f"video {lost[0]!r} ({len(lost)} in all) is in none of "
                        f"{', '.join(spec.fields[4:])}; expected each video in one split",
                        file=path, field="videoIDs")
    return split_of


# --- the feature files -----------------------------------------------------------------------

class _Column:
    """Per-utterance vectors of one modality: dims fixed by the first file, zeros for missing."""

    def __init__(self, modality: str):
        self.modality = modality
        self.vectors: list[np.ndarray | None] = []
        self.first: Path | None = None
        self.dim: int | None = None

    def add(self, vec: np.ndarray | None, file: Path) -> None:
        if vec is not None:
            if self.dim is None:
                self.dim, self.first = vec.shape[0], file
            elif vec.shape[0] != self.dim:
                raise DataError(f"expected dimension {self.dim} (as in {self.first}), got "
                                f"{vec.shape[0]}", file=file, field=self.modality)
        self.vectors.append(vec)

    def stack(self, folder: Path) -> tuple[np.ndarray, np.ndarray]:
        if self.dim is None:
            raise DataError("no utterance has a feature file; expected at least one to infer "
                            "the dimension", file=folder, field=self.modality)
        out = np.zeros((len(self.vectors), self.dim), dtype=np.float32)
        present = np.array([v is not None for v in self.vectors], dtype=bool)
        for i, v in enumerate(self.vectors):
            if v is not None:
                out[i] = v
        return out, present


def _read_vector(file: Path, field: str) -> np.ndarray | None:
    """A feature vector from one ``.npy``: 2-D averaged over frames; None when empty."""
    arr = load_npy(file, field)
    if arr.ndim not in (1, 2):
        raise DataError(f"expected a 1-D (dim,) or 2-D (frames, dim) array, got shape "
                        f"{arr.shape}", file=file, field=field)
    if arr.size == 0:
        return None  # an empty track: recorded as missing, never as a zero "observation"
    vec = arr.mean(axis=0) if arr.ndim == 2 else arr
    vec = np.asarray(vec, dtype=np.float32)
    check_finite(vec[None, :], file, field)
    return vec


def _feature_file(folder: Path, modality: str, uid: str, spec: Kind) -> Path:
    if modality == "v" and spec.is_iemocap:
        # One face track per speaker; the utterance's own speaker ends its id: ..._M001 -> M.
        letter = uid.rsplit("_", 1)[-1][:1]
        return folder / uid / f"compress_{letter}.npy"
    return folder / f"{uid}.npy"


def _read_features(table: pd.DataFrame, dirs: dict[str, Path], spec: Kind, missing_ok: bool,
                   progress: bool, modalities: tuple[str, ...] = MODALITIES
                   ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    columns = {m: _Column(m) for m in modalities}
    uids = table["utterance_id"].tolist()
    for uid in tqdm(uids, desc=f"reading {spec.name} features", unit="utt",
                    disable=not progress):
        for m in modalities:
            file = _feature_file(dirs[m], m, uid, spec)
            if file.is_file():
                columns[m].add(_read_vector(file, m), file)
            elif m == "v" or missing_ok:
                columns[m].add(None, file)  # absent face track (or allowed gap): missing
            else:
                raise DataError("file not found; expected one .npy per utterance (pass "
                                "missing_ok=True / --missing-ok to record absent files as "
                                "missing)", file=file, field=m)
    stacked = {m: columns[m].stack(dirs[m]) for m in modalities}
    features = {m: stacked[m][0] for m in modalities}
    available = (np.stack([stacked[m][1] for m in modalities], axis=1) if modalities
                 else np.zeros((len(uids), 0), bool))
    return features, available


# --- public API ------------------------------------------------------------------------------

def read_reference(root: str | Path, kind: str = "auto", allow_pickle: bool = False,
                   feature_dirs: dict | None = None, progress: bool = True,
                   missing_ok: bool = False, transcripts: bool = False,
                   modalities: tuple[str, ...] | None = None) -> MERDataset:
    """Read IEMOCAP (four/six classes) or CMU-MOSI/MOSEI in the reference layout.

    Parameters
    ----------
    root : str or Path
        Folder holding the label pickle and the feature folders, or the pickle itself (the
        feature folders are then looked up beside it).
    kind : {"auto", "iemocap4", "iemocap6", "mosi", "mosei"}
        ``auto`` reads it from the pickle's file name.
    allow_pickle : bool
        Must be True to read the label pickle (pickle can execute arbitrary code).
    feature_dirs : dict, optional
        Folder per modality (``{"a": ..., "t": ..., "v": ...}``), relative to ``root`` or
        absolute, replacing the defaults in :data:`FEATURE_DIRS`.
    progress : bool
        Show a progress bar over utterances.
    missing_ok : bool
        Record absent audio/text files as missing instead of raising.
    transcripts : bool
        Keep the pickle's sentences as a ``transcript`` column (``hardymer convert --text``
        embeds them).
    modalities : tuple of str, optional
        The feature folders to read (default all three); the others are left out of the data
        set, e.g. ``("a", "v")`` when the text comes from the transcripts.

    Returns
    -------
    MERDataset
        Modalities ``("a", "t", "v")``. IEMOCAP: int labels, a ``session`` column, empty
        ``split``; CMU: float labels and ``split`` from the pickle's train/val/test sets.

    Raises
    ------
    DataError
        Pickle not allowed, bad pickle structure, absent or malformed feature files.

    Example
    -------
    >>> ds = read_reference("~/features/IEMOCAP", "iemocap4", allow_pickle=True)  # doctest: +SKIP
    """
    label_file, kind = find_label_file(Path(root).expanduser(), kind)
    spec = KINDS[kind]
    data = load_label_pickle(label_file, kind, allow_pickle)
    table, raw_labels = _utterance_table(data, spec, label_file, transcripts)
    task = "classification" if spec.class_names else "regression"
    labels = check_labels(raw_labels, task, len(spec.class_names) if spec.class_names else None,
                          label_file, "videoLabels", ids=table["utterance_id"].to_numpy())
    base = label_file.parent
    mods = MODALITIES if modalities is None else tuple(m for m in MODALITIES if m in modalities)
    dirs = {m: _feature_dir(base, m, feature_dirs) for m in mods}
    features, available = _read_features(table, dirs, spec, missing_ok, progress, mods)
    dataset = MERDataset(
        name=kind, task=task, modalities=mods, features=features, available=available,
        labels=labels, utterances=table, class_names=spec.class_names,
        meta={"family": spec.family, "kind": kind, "source": str(label_file),
              "feature_dirs": {m: str(d) for m, d in dirs.items()}})
    # With some modalities still to come (the text from transcripts), nothing is dropped yet.
    return dataset if modalities is not None else without_empty_utterances(dataset, label_file)


def convert(src_root: str | Path, out_path: str | Path, kind: str = "auto",
            allow_pickle: bool = False, missing_ok: bool = False, overwrite: bool = False,
            feature_dirs: dict | None = None, progress: bool = True) -> MERDataset:
    """Read the reference layout and write it as a generic folder (atomically).

    Returns the data set read, so callers can print its summary. Parameters are those of
    :func:`read_reference` and :func:`~hardymer.data.generic.write_generic`.

    Example
    -------
    >>> convert("~/features/IEMOCAP", "data/iemocap4", "iemocap4", allow_pickle=True)  # doctest: +SKIP
    """
    out_path = Path(out_path)
    # Fail before the (long) read rather than after it.
    if out_path.exists() and not overwrite and not (out_path.is_dir()
                                                    and not any(out_path.iterdir())):
        raise FileExistsError(f"{out_path} already exists and is not empty; pass overwrite=True "
                              "(--overwrite) to replace it")
    dataset = read_reference(src_root, kind, allow_pickle=allow_pickle,
                             feature_dirs=feature_dirs, progress=progress, missing_ok=missing_ok)
    write_generic(dataset, out_path, overwrite=overwrite)
    return dataset
