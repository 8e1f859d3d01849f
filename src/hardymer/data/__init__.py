"""Data: the in-memory data set, loaders for the reference and generic formats, the generator.

``open_data(source)`` is the one entry point: a generic folder, a reference-layout root (label
pickle, opt-in), or ``synth:PRESET[@SEED]``.
"""
from __future__ import annotations

from .dataset import Batch, MERDataset, SequenceDataset, collate
from .io import load_dataset
from .synthetic import generate
from .validate import DataError


def open_data(source: str, allow_pickle: bool = False, mmap: bool = False) -> MERDataset:
    """Load a data set from a path or generate one from ``synth:PRESET[@SEED]``."""
    if str(source).startswith("synth:"):
        spec = str(source)[len("synth:"):]
        preset, _, seed = spec.partition("@")
        try:
            return generate(preset or "tiny", seed=int(seed) if seed else 0)
        except KeyError as err:
            raise DataError(f"unknown synthetic preset {preset!r}: {err}", field="data") from err
    return load_dataset(source, allow_pickle=allow_pickle, mmap=mmap)


__all__ = ["Batch", "MERDataset", "SequenceDataset", "collate", "DataError", "open_data"]
