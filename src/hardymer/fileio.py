"""Atomic file writes: write to a temporary sibling, then rename, so a reader (or a restarted
run) sees either the old file or the complete new one, never half of it.

Every temp-then-rename write of the package goes through here: text and JSON, arrays,
tensor files (:func:`atomic_path` hands the writer a temporary path with the target's
suffix, since ``np.save`` and ``np.savez`` append one otherwise), and whole folders
(:func:`atomic_folder`, a temporary sibling swapped in by renames).
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write; renamed onto ``path`` if the block succeeds.

    The temporary name keeps ``path``'s suffix (``.a.tmp1234.npy`` for ``a.npy``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}-{uuid.uuid4().hex[:6]}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def atomic_save_npy(path: Path, array) -> None:
    """``np.save`` to ``path`` (ends in ``.npy``) atomically."""
    with atomic_path(path) as tmp:
        np.save(tmp, array)


@contextmanager
def atomic_memmap(path: Path, shape: tuple[int, ...], dtype=np.float32) -> Iterator[np.memmap]:
    """A writable ``.npy`` memory map of ``shape`` to fill in chunks (an array larger than
    memory never exists whole); flushed and renamed onto ``path`` if the block succeeds."""
    with atomic_path(path) as tmp:
        x = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=tuple(shape))
        try:
            yield x
            x.flush()
        finally:
            del x


def filled(shape: tuple[int, ...], fill: Callable[[np.ndarray], None],
           out: Path | None = None, dtype=np.float32) -> np.ndarray:
    """An array of ``shape`` that ``fill(dst)`` writes in place: in memory, or with ``out``
    (a ``.npy`` path) written there through :func:`atomic_memmap` and returned as a read-only
    memory map, so that an array larger than memory never exists whole."""
    if out is None:
        dst = np.empty(shape, dtype=dtype)
        fill(dst)
        return dst
    with atomic_memmap(Path(out), shape, dtype) as dst:
        fill(dst)
    return np.load(out, mmap_mode="r")


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """A temporary sibling folder to fill; swapped in for ``path`` if the block succeeds.

    An existing ``path`` is renamed aside, the new folder renamed in, then the old one
    deleted; if the second rename fails, the old folder is put back. On error the temporary
    folder is removed and ``path`` is untouched.
    """
    path = Path(path)
    with scratch_folder(path.parent, f".{path.name}.tmp-") as tmp:
        yield tmp
        swap_into_place(tmp, path)


@contextmanager
def scratch_folder(parent: Path, prefix: str = ".write-") -> Iterator[Path]:
    """A new temporary folder inside ``parent`` (same file system, so its entries can be
    renamed into place), removed with whatever is left in it when the block ends."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f"{prefix}{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def swap_into_place(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` (a file or folder) to ``path``. A file over a file is one atomic rename;
    otherwise an existing ``path`` is moved aside first, then deleted."""
    if not path.exists() or (path.is_file() and tmp.is_file()):
        os.replace(tmp, path)
        return
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()
        os.replace(tmp, path)
        return
    old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)  # put the previous contents back
        raise
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


def check_folder_path(path: Path) -> None:
    """ValueError unless ``path`` can be (or is) a folder: no file in the way, itself or above."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise ValueError(f"--out {path}: {p} is a file; expected a folder (or a path "
                                 "whose parents are folders)")
            return


@contextmanager
def folder_lock(folder: Path, notify=None) -> Iterator[None]:
    """Hold an exclusive lock on ``folder/.lock`` for the block: one writer per folder.

    A second holder waits until the first is done; ``notify`` (a callable taking a message,
    default: print to stderr) hears who holds it while it waits. The lock is the kernel's
    (``fcntl.flock``), so a killed holder releases it at once; the file keeps the holder's
    pid, host and command for that message. Creates ``folder`` if needed.
    """
    import fcntl
    import socket
    import sys
    import time

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text(errors="replace").strip() or "another process"
            (notify or (lambda m: print(m, file=sys.stderr, flush=True)))(
                f"waiting for {folder}: in use by {holder}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (f"pid {os.getpid()} on {socket.gethostname()} since "
                       f"{time.strftime('%Y-%m-%d %H:%M:%S')}: "
                       f"{' '.join(sys.argv) or 'python'}\n").encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
