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

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..fileio import atomic_path
from .dataset import MERDataset

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
    def fit(cls, dataset: MERDataset, train_rows: np.ndarray, floor: float = 1e-6
            ) -> "FoldScaler":
        mean, std = {}, {}
        for j, m in enumerate(dataset.modalities):
            rows = train_rows[dataset.available[train_rows, j]]
            x = np.asarray(dataset.features[m][rows], dtype=np.float64)
            if len(x) == 0:   # never available in training: leave the modality as it is
                mean[m], std[m] = np.zeros(dataset.dims[m]), np.ones(dataset.dims[m])
                continue
            mean[m], sd = x.mean(0), x.std(0)
            std[m] = np.where(sd > floor, sd, 1.0)   # constant dimensions: centred only
        return cls(mean, std)

    def transform(self, features: dict[str, np.ndarray], available: np.ndarray,
                  modalities: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Standardised copies {m: (N, d_m) float32}; unavailable rows zero."""
        out = {}
        for j, m in enumerate(modalities):
            z = ((np.asarray(features[m], np.float64) - self.mean[m]) / self.std[m])
            z = z.astype(np.float32)
            z[~available[:, j]] = 0.0
            out[m] = z
        return out

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

    def apply(self, dataset: MERDataset) -> MERDataset:
        return replace(dataset, features=self.transform(dataset.features, dataset.available,
                                                        dataset.modalities))


def fold_inputs(setting, dataset: MERDataset, train_sequences: np.ndarray
                ) -> tuple[MERDataset, FoldScaler | None]:
    """The data a fold's models read (standardised when wanted) and the scaler used."""
    if not standardize_wanted(setting, dataset):
        return dataset, None
    scaler = FoldScaler.fit(dataset, dataset.rows_of(train_sequences))
    return scaler.apply(dataset), scaler
