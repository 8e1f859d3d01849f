"""Per-fold feature standardisation: z-scores with the fold's training statistics only.

Extracted features come in very different scales (openSMILE functionals reach the thousands,
sentence embeddings are unit vectors), which stalls training. With ``train.standardize`` on,
every modality is centred and scaled per dimension by the mean and standard deviation of the
fold's *training* utterances where it is available — never validation or test rows — and the
same map is applied to every row, and to new utterances at prediction time. Unavailable rows
stay zero and stay marked unavailable.

``train.standardize=auto`` (default) switches it on for data sets made by ``hardymer extract``
and off otherwise: the papers' feature sets are used as they are, as the papers do.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..fileio import atomic_path, atomic_write_json, filled
from .dataset import MERDataset

# Rows standardised at once: 16,384 x 1024 float64 = 128 MiB per transient copy.
CHUNK_ROWS = 16_384
CHOICES = {"auto": None, "true": True, "on": True, "yes": True, "false": False, "off": False,
           "no": False}


def standardize_wanted(setting, dataset: MERDataset) -> bool:
    """Resolve ``train.standardize`` (auto / true / false) for a data set."""
    key = str(setting).strip().lower()
    if key not in CHOICES:
        raise ValueError(f"train.standardize={setting!r}; expected one of auto, true, false")
    value = CHOICES[key]
    return bool(dataset.meta.get("extraction")) if value is None else value


@dataclass
class FoldScaler:
    """Mean and standard deviation {m: (d_m,)} of the training rows of one fold."""

    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]

    @classmethod
    def fit(cls, dataset: MERDataset, train_rows: np.ndarray, floor: float = 1e-6,
            chunk: int = CHUNK_ROWS) -> "FoldScaler":
        """Two passes over the training rows, ``chunk`` rows at a time (float64 sums), so a
        memory-mapped matrix is read, never copied whole; one chunk equals ``x.mean(0)`` and
        ``x.std(0)`` exactly."""
        mean, std = {}, {}
        for j, m in enumerate(dataset.modalities):
            rows = train_rows[dataset.available[train_rows, j]]
            if len(rows) > chunk:
                rows = np.sort(rows)   # a map read front to back
            d = dataset.dims[m]
            if len(rows) == 0:   # never available in training: leave the modality as it is
                mean[m], std[m] = np.zeros(d), np.ones(d)
                continue
            x = dataset.features[m]
            parts = [rows[a:a + chunk] for a in range(0, len(rows), chunk)]
            mu = sum(np.asarray(x[r], np.float64).sum(0) for r in parts) / len(rows)
            var = sum(((np.asarray(x[r], np.float64) - mu) ** 2).sum(0) for r in parts) \
                / len(rows)
            sd = np.sqrt(var)
            mean[m], std[m] = mu, np.where(sd > floor, sd, 1.0)  # constant dims: centred only
        return cls(mean, std)

    def transform(self, features: dict[str, np.ndarray], available: np.ndarray,
                  modalities: tuple[str, ...], out: Path | None = None,
                  chunk: int = CHUNK_ROWS) -> dict[str, np.ndarray]:
        """Standardised copies {m: (N, d_m) float32}; unavailable rows zero. Computed
        ``chunk`` rows at a time; with ``out``, written to ``out/<m>.npy`` and returned as
        read-only memory maps (nothing of size N × d is held in memory)."""
        result = {}
        for j, m in enumerate(modalities):
            x = features[m]
            result[m] = filled(x.shape, lambda z: self._fill(z, x, available[:, j], m, chunk),
                               None if out is None else Path(out) / f"{m}.npy")
        return result

    def _fill(self, z, x, available, m, chunk) -> None:
        for a in range(0, x.shape[0], chunk):
            part = (np.asarray(x[a:a + chunk], np.float64) - self.mean[m]) / self.std[m]
            part[~available[a:a + chunk]] = 0.0
            z[a:a + chunk] = part

    def save(self, path: Path) -> None:
        """``path`` (safetensors): ``mean.<m>`` and ``std.<m>`` (float64) per modality."""
        from safetensors.numpy import save_file
        tensors = {f"{k}.{m}": np.ascontiguousarray(v[m], np.float64)
                   for k, v in (("mean", self.mean), ("std", self.std)) for m in self.mean}
        with atomic_path(Path(path)) as tmp:
            save_file(tensors, str(tmp), metadata={"what": "hardymer per-fold standardisation: "
                                                   "z = (x - mean) / std of the fold's "
                                                   "training rows"})

    @classmethod
    def load(cls, path: Path) -> "FoldScaler":
        from safetensors.numpy import load_file
        t = load_file(str(path))
        mods = [k.split(".", 1)[1] for k in t if k.startswith("mean.")]
        return cls({m: t[f"mean.{m}"] for m in mods}, {m: t[f"std.{m}"] for m in mods})

    def apply(self, dataset: MERDataset, out: Path | None = None) -> MERDataset:
        return replace(dataset, features=self.transform(dataset.features, dataset.available,
                                                        dataset.modalities, out))


def is_mapped(dataset: MERDataset) -> bool:
    """Whether the data set's features are memory maps (read as needed, not held)."""
    return any(isinstance(x, np.memmap) for x in dataset.features.values())


def fold_inputs(setting, dataset: MERDataset, train_sequences: np.ndarray,
                workdir: Path | None = None) -> tuple[MERDataset, FoldScaler | None]:
    """The data a fold's models read (standardised when wanted) and the scaler used.

    With ``workdir`` and memory-mapped features, the standardised matrices are written there
    (``<m>.npy``, the scaler and a marker) and mapped back, so a data set larger than memory
    stays out of memory; a later call with the same training rows reads them back. Without
    it they are held in memory.
    """
    if not standardize_wanted(setting, dataset):
        return dataset, None
    rows = dataset.rows_of(train_sequences)
    if workdir is None or not is_mapped(dataset):
        scaler = FoldScaler.fit(dataset, rows)
        return scaler.apply(dataset), scaler
    workdir = Path(workdir)
    marker = workdir / "standardized.json"
    want = {"train_rows": hashlib.sha1(np.ascontiguousarray(rows, np.int64)).hexdigest(),
            "dims": dataset.dims, "n": int(dataset.n_utterances)}
    if marker.is_file() and json.loads(marker.read_text()) == want:
        scaler = FoldScaler.load(workdir / "scaler.safetensors")
        feats = {m: np.load(workdir / f"{m}.npy", mmap_mode="r") for m in dataset.modalities}
        return replace(dataset, features=feats), scaler
    marker.unlink(missing_ok=True)
    scaler = FoldScaler.fit(dataset, rows)
    scaler.save(workdir / "scaler.safetensors")
    out = scaler.apply(dataset, workdir)
    atomic_write_json(marker, want)   # written last: the cache is complete
    return out, scaler
