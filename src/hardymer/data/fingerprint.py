"""What a data set is, byte for byte: one digest per part, so a run can say which part changed.

A data set read from a generic folder is digested file by file (``dataset.json``, the
utterance table, ``sequences.csv``, ``available.npy``, ``features/<m>.npy``): a streamed
BLAKE2b over every byte, cached by (path, size, modification time) in the user's cache folder
so a 10 GB set is hashed once, not on every command. Any other data set (generated, read
from the reference layout, or derived in memory) is digested from its arrays and table.

The cache lives in ``$HARDYMER_CACHE``, else ``$XDG_CACHE_HOME/hardymer``, else
``~/.cache/hardymer``; a cache that cannot be written is skipped (hashing still happens). An
edit that keeps a file's size and modification time (``touch -r``) is not seen — the price
of not rehashing.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..fileio import atomic_write_json
from .dataset import MERDataset

_CHUNK = 1 << 22  # 4 MiB per read: memory stays flat whatever the file size


def content_digests(dataset: MERDataset) -> dict[str, str]:
    """``{part: hex digest}``; parts are file names relative to the data folder (``features/
    a.npy``) for a generic folder, else ``features[a]``, ``labels``, ``available``,
    ``utterances``, ``header``."""
    files = getattr(dataset, "source_files", None)
    if files and all(Path(p).is_file() for p in files.values()):
        return {name: file_digest(path) for name, path in files.items()}
    # In memory, computed once per object (data sets are not modified in place).
    if getattr(dataset, "_digests", None) is None:
        dataset._digests = _memory_digests(dataset)
    return dict(dataset._digests)


def combined(digests: dict[str, str]) -> str:
    """One digest of every part (the run folder's ``fingerprint``)."""
    h = hashlib.blake2b(digest_size=20)
    for name in sorted(digests):
        h.update(f"{name}={digests[name]}\n".encode())
    return h.hexdigest()


def changed_parts(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """Parts whose digest differs, or that exist on one side only."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def file_digest(path: str | Path) -> str:
    """BLAKE2b of a file's bytes, from the cache when size and mtime are unchanged."""
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    cache = _load_cache()
    if key in cache:
        return cache[key]
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    _store_cache(cache, key, digest)
    return digest


def _memory_digests(ds: MERDataset) -> dict[str, str]:
    def of(a) -> str:
        a = np.asarray(a)
        h = hashlib.blake2b(f"{a.dtype.str}{a.shape}".encode(), digest_size=20)
        for start in range(0, max(len(a), 1), 65536):  # memory maps stay on disk
            h.update(np.ascontiguousarray(a[start:start + 65536]).tobytes())
        return h.hexdigest()

    header = {"name": ds.name, "task": ds.task, "modalities": list(ds.modalities),
              "class_names": ds.class_names, "meta": ds.meta}
    parts = {f"features[{m}]": of(ds.features[m]) for m in ds.modalities}
    parts["labels"] = of(ds.labels)
    parts["available"] = of(ds.available)
    for name, text in (("utterances", ds.utterances.to_csv(index=False)),
                       ("header", json.dumps(header, sort_keys=True, default=str))):
        parts[name] = hashlib.blake2b(text.encode(), digest_size=20).hexdigest()
    return parts


# --- the digest cache ---------------------------------------------------------------------------

def cache_dir() -> Path:
    if os.environ.get("HARDYMER_CACHE"):
        return Path(os.environ["HARDYMER_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hardymer"


def _cache_file() -> Path:
    return cache_dir() / "digests.json"


def _load_cache() -> dict[str, str]:
    try:
        return json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}


def _store_cache(cache: dict[str, str], key: str, digest: str) -> None:
    path = key.split("|", 1)[0]
    # One entry per file: an older size/mtime of the same path is dropped.
    cache = {k: v for k, v in cache.items() if k.split("|", 1)[0] != path}
    cache[key] = digest
    try:
        atomic_write_json(_cache_file(), cache)
    except OSError:
        pass  # a read-only home: hash again next time
