"""One entry point for data on disk: decide the format from what the path holds, then load.

* a folder with ``dataset.json`` -> the generic format (:func:`~.generic.read_generic`);
* a folder with a ``*_features_raw_*.pkl`` label pickle, or a ``.pkl`` file -> the reference
  layout (:func:`~.reference.read_reference`; the kind is read from the pickle's name).
"""
from __future__ import annotations

from pathlib import Path

from .dataset import MERDataset
from .generic import read_generic
from .reference import LABEL_FILE_GLOB, read_reference
from .validate import DataError

EXPECTED = ("a generic data set folder (with dataset.json), a reference root holding a label "
            f"pickle ({LABEL_FILE_GLOB}, e.g. IEMOCAP_features_raw_4way.pkl), or such a .pkl "
            "file")


def load_dataset(path: str | Path, allow_pickle: bool = False, mmap: bool = False,
                 progress: bool = True) -> MERDataset:
    """Load a data set from a path, whichever supported format it holds.

    Parameters
    ----------
    path : str or Path
    allow_pickle : bool
        Needed for the reference layout, whose labels are a pickle (which can execute code).
    mmap : bool
        Generic format only: memory-map the feature matrices.
    progress : bool
        Reference layout only: progress bar while reading per-utterance files.

    Returns
    -------
    MERDataset

    Raises
    ------
    DataError
        When the path holds none of the supported formats, or the data are invalid.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"no such file or folder; expected {EXPECTED}", file=path)
    if path.is_dir() and (path / "dataset.json").is_file():
        return read_generic(path, mmap=mmap)
    if (path.is_file() and path.suffix == ".pkl") or \
            (path.is_dir() and any(path.glob(LABEL_FILE_GLOB))):
        return read_reference(path, "auto", allow_pickle=allow_pickle, progress=progress)
    raise DataError(f"unrecognised data; expected {EXPECTED}", file=path)
