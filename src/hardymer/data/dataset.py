"""The one in-memory data set every loader produces, and the batches every method consumes.

A data set is a table of utterances grouped into sequences (a dialogue, a video), one float
matrix per modality and an explicit availability mask. Loaders (reference pickles, the generic
format, the synthetic generator) all return a :class:`MERDataset`; the trainer only ever sees
:class:`Batch` objects built by :func:`collate`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal, Sequence

import numpy as np
import pandas as pd
import torch

Task = Literal["classification", "regression"]

# Columns of MERDataset.utterances that have a meaning to the toolkit; others are carried along.
UTTERANCE_COLUMNS = ("utterance_id", "sequence_id", "position", "speaker", "split", "session")


@dataclass
class MERDataset:
    """Utterance-level multimodal data grouped into sequences.

    Attributes
    ----------
    name : str
        Human-readable name (file stem or preset).
    task : {"classification", "regression"}
    modalities : tuple of str
        Modality names in a fixed order; index ``m`` of ``available[:, m]`` refers to
        ``modalities[m]``. The standard sets use ``("a", "t", "v")``.
    features : dict of str -> ndarray, shape (n_utterances, dim_m), float32
        One matrix per modality (may be a read-only memory map). Rows where the modality is not
        available hold zeros, but nothing may rely on that: use ``available``.
    available : ndarray of bool, shape (n_utterances, n_modalities)
        True where the data holds a real value for the modality.
    labels : ndarray, shape (n_utterances,)
        int64 class ids in ``[0, n_classes)`` or float32 regression targets.
    utterances : DataFrame, n_utterances rows
        ``utterance_id`` (unique str), ``sequence_id`` (str), ``position`` (int order in the
        sequence), ``speaker`` (str, may be empty), ``split`` (str, may be empty), and any extra
        columns (e.g. ``session``, ``planted_*``).
    class_names : tuple of str or None
        Names of the classes (classification only).
    meta : dict
        Provenance: family (``iemocap``/``mosi``/``mosei``/``generic``), generator preset, seed…
    """

    name: str
    task: Task
    modalities: tuple[str, ...]
    features: dict[str, np.ndarray]
    available: np.ndarray
    labels: np.ndarray
    utterances: pd.DataFrame
    class_names: tuple[str, ...] | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.modalities = tuple(self.modalities)
        order = self.utterances.sort_values(["sequence_id", "position"], kind="stable")
        # Sequences in order of first appearance in the table, utterances by position.
        first_seen = pd.unique(self.utterances["sequence_id"])
        groups = order.groupby("sequence_id", sort=False).indices
        rows = order.index.to_numpy()
        self._sequences = [rows[groups[s]] for s in first_seen]
        self._sequence_ids = np.asarray(first_seen, dtype=object)

    # --- sizes -----------------------------------------------------------------------------
    @property
    def n_utterances(self) -> int:
        return len(self.labels)

    @property
    def dims(self) -> dict[str, int]:
        return {m: int(self.features[m].shape[1]) for m in self.modalities}

    @property
    def n_classes(self) -> int:
        """Number of classes; 1 for regression (one output)."""
        if self.task == "regression":
            return 1
        return len(self.class_names) if self.class_names else int(self.labels.max()) + 1

    @property
    def sequences(self) -> list[np.ndarray]:
        """Global utterance indices of each sequence, in utterance order."""
        return self._sequences

    @property
    def sequence_ids(self) -> np.ndarray:
        return self._sequence_ids

    @property
    def family(self) -> str:
        return str(self.meta.get("family", "generic"))

    @property
    def speaker_codes(self) -> np.ndarray:
        """(n_utterances,) speaker id local to each sequence (0, 1, … by first turn); -1 unknown."""
        if getattr(self, "_speaker_codes", None) is None:
            speakers = self.utterances["speaker"].fillna("").astype(str).to_numpy()
            codes = np.full(self.n_utterances, -1, dtype=np.int64)
            for rows in self._sequences:
                codes[rows] = _speaker_codes(speakers[rows])
            self._speaker_codes = codes
        return self._speaker_codes

    def rows_of(self, sequence_indices: Sequence[int]) -> np.ndarray:
        """Global utterance indices of these sequences (into ``sequences``), in order. (n,)"""
        if len(sequence_indices) == 0:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([self.sequences[s] for s in sequence_indices])

    def sequence_column(self, column: str) -> np.ndarray:
        """Value of ``column`` for each sequence (taken from its first utterance)."""
        values = self.utterances[column].to_numpy()
        return np.array([values[s[0]] for s in self._sequences], dtype=object)

    def summary(self) -> str:
        dims = ", ".join(f"{m} {d}" for m, d in self.dims.items())
        missing = 1.0 - self.available.mean(axis=0)
        miss = ", ".join(f"{m} {p:.0%}" for m, p in zip(self.modalities, missing))
        return (f"{self.name}: {self.task}, {self.n_utterances} utterances in "
                f"{len(self._sequences)} sequences, dims ({dims}), missing in data ({miss})")

    def select_utterances(self, keep: np.ndarray) -> "MERDataset":
        """The data set restricted to the utterances where ``keep`` (bool, (n_utterances,))
        is True, in the same order; sequences left without utterances disappear."""
        idx = np.flatnonzero(keep)
        return replace(self, features={m: np.asarray(self.features[m][idx])
                                       for m in self.modalities},
                       available=self.available[idx], labels=self.labels[idx],
                       utterances=self.utterances.iloc[idx].reset_index(drop=True),
                       meta=dict(self.meta))

    def subset_features(self, modalities: Sequence[str]) -> "MERDataset":
        """A view with only some modalities (same utterances)."""
        idx = [self.modalities.index(m) for m in modalities]
        return replace(self, modalities=tuple(modalities),
                       features={m: self.features[m] for m in modalities},
                       available=self.available[:, idx])


@dataclass
class Batch:
    """A padded batch of B sequences of at most S utterances.

    Attributes
    ----------
    x : dict of str -> Tensor (B, S, dim_m), float32
        Features; zero at padding and where the data lacks the modality. Values of modalities
        that the missing-modality condition hides are *kept* (they are reconstruction targets),
        so models must read ``available``, never the values, to know what they may use.
    available : BoolTensor (B, S, M)
        What the model may see: data availability AND the condition's mask AND not padding.
    present : BoolTensor (B, S, M)
        What the data holds (true values exist), regardless of the condition.
    utt_mask : BoolTensor (B, S)
        True for real utterances, False for padding.
    labels : Tensor (B, S)
        long class ids or float targets; 0 at padding (never read there).
    index : LongTensor (B, S)
        Global utterance index into the data set; -1 at padding.
    speaker : LongTensor (B, S)
        Speaker id within the sequence (0, 1, …); -1 at padding or when unknown.
    """

    x: dict[str, torch.Tensor]
    available: torch.Tensor
    present: torch.Tensor
    utt_mask: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor
    speaker: torch.Tensor
    modalities: tuple[str, ...]

    def to(self, device: torch.device | str) -> "Batch":
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return replace(self, x={m: move(v) for m, v in self.x.items()},
                       available=move(self.available), present=move(self.present),
                       utt_mask=move(self.utt_mask), labels=move(self.labels),
                       index=move(self.index), speaker=move(self.speaker))

    def with_available(self, available: torch.Tensor) -> "Batch":
        """Same batch under another availability mask (ANDed with presence and padding)."""
        return replace(self, available=available & self.present & self.utt_mask[..., None])

    @property
    def n_utterances(self) -> int:
        return int(self.utt_mask.sum())


def _speaker_codes(speakers: np.ndarray) -> np.ndarray:
    """Speaker ids local to a sequence in order of first appearance; -1 for unknown."""
    codes = np.full(len(speakers), -1, dtype=np.int64)
    seen: dict[str, int] = {}
    for i, s in enumerate(speakers):
        if isinstance(s, str) and s:
            codes[i] = seen.setdefault(s, len(seen))
    return codes


class SequenceDataset(torch.utils.data.Dataset):
    """Items are sequences (by position in ``dataset.sequences``) of a chosen subset.

    Pass it to a ``DataLoader`` with any sampler (random, sequential, distributed) and
    ``collate_fn=self.collate``.

    Parameters
    ----------
    dataset : MERDataset
    sequence_indices : array of int
        Which sequences of ``dataset.sequences`` belong to this split.
    availability : ndarray of bool (n_utterances, M), optional
        Condition mask over *all* utterances of the data set, ANDed with data availability.
        ``None`` means the full data (no simulated missingness).
    """

    def __init__(self, dataset: MERDataset, sequence_indices: Sequence[int],
                 availability: np.ndarray | None = None):
        self.dataset = dataset
        self.sequence_indices = np.asarray(sequence_indices, dtype=np.int64)
        self.availability = availability

    def __len__(self) -> int:
        return len(self.sequence_indices)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.dataset.sequences[self.sequence_indices[i]]

    def utterance_indices(self) -> np.ndarray:
        """All utterance indices of this split, sequence by sequence."""
        return self.dataset.rows_of(self.sequence_indices)

    def collate(self, rows: list[np.ndarray]) -> Batch:
        return collate(self.dataset, rows, self.availability, self.dataset.speaker_codes)


def collate(dataset: MERDataset, rows: list[np.ndarray], availability: np.ndarray | None = None,
            speaker_codes: np.ndarray | None = None) -> Batch:
    """Pad a list of sequences (arrays of global utterance indices) into a :class:`Batch`."""
    B, S = len(rows), max(len(r) for r in rows)
    index = np.full((B, S), -1, dtype=np.int64)
    for b, r in enumerate(rows):
        index[b, : len(r)] = r
    utt_mask = index >= 0
    flat = np.where(utt_mask, index, 0)  # (B, S), padding points at row 0 and is masked below

    present = dataset.available[flat] & utt_mask[..., None]  # (B, S, M)
    available = present if availability is None else present & availability[flat]
    x = {}
    for m_i, m in enumerate(dataset.modalities):
        feats = np.asarray(dataset.features[m][flat.reshape(-1)], dtype=np.float32)
        feats = feats.reshape(B, S, -1)
        feats[~present[..., m_i]] = 0.0
        x[m] = torch.from_numpy(feats)
    labels = dataset.labels[flat].copy()
    labels[~utt_mask] = 0
    speaker = np.full((B, S), -1, dtype=np.int64)
    if speaker_codes is not None:
        speaker = np.where(utt_mask, speaker_codes[flat], -1)
    return Batch(
        x=x,
        available=torch.from_numpy(np.ascontiguousarray(available)),
        present=torch.from_numpy(np.ascontiguousarray(present)),
        utt_mask=torch.from_numpy(utt_mask),
        labels=torch.from_numpy(labels),
        index=torch.from_numpy(index),
        speaker=torch.from_numpy(speaker),
        modalities=dataset.modalities,
    )


def sequences_batch(dataset: MERDataset, rows: np.ndarray,
                    availability: np.ndarray | None = None) -> Batch:
    """One batch of every sequence of ``dataset`` that holds one of ``rows`` (whole
    sequences, so a model sees each row in its dialogue)."""
    seqs = [s for s in dataset.sequences if np.isin(s, rows).any()]
    return collate(dataset, seqs, availability, dataset.speaker_codes)


def pick_rows(values: np.ndarray, index: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``values`` (U, ...) of the utterances ``index`` (U,), picked for ``rows`` in order."""
    where = {int(g): k for k, g in enumerate(index)}
    return np.stack([values[where[int(r)]] for r in rows])
