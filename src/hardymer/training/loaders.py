"""Loaders of one fold under one missing-modality condition.

Training batches carry the condition only in stages that ask for it (MoMKE's stage 1 sees all
modalities). Under a random condition the training mask is redrawn every epoch and the
validation/test masks are fixed draws; all are pure functions of (seed, draw), so a resumed run
sees exactly the masks an uninterrupted one would.

Samplers are passed in (a ``sampler_factory(dataset, epoch)``), so a distributed run can give a
``DistributedSampler`` without touching the trainer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, Sampler

from ..data.dataset import MERDataset, SequenceDataset
from ..protocol.conditions import EVAL_DRAW, Condition
from ..protocol.splits import Fold

SamplerFactory = Callable[[SequenceDataset, int], Sampler]


def seeded_random_sampler(seed: int) -> SamplerFactory:
    """Shuffle sequences with a generator seeded by (seed, epoch): resumable, global-RNG free."""
    def make(ds: SequenceDataset, epoch: int) -> Sampler:
        g = torch.Generator()
        g.manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))
        return RandomSampler(ds, generator=g)
    return make


class UtteranceBudgetBatches(Sampler[list[int]]):
    """Batches of whole sequences, in ``sampler``'s order, of at most ``budget`` utterances
    each (a longer sequence goes alone). Wraps any sampler, a distributed one included."""

    def __init__(self, sampler: Sampler, lengths: np.ndarray, budget: int):
        self.sampler, self.lengths, self.budget = sampler, lengths, int(budget)

    def __iter__(self):
        batch, n = [], 0
        for i in self.sampler:
            size = int(self.lengths[i])
            if batch and n + size > self.budget:
                yield batch
                batch, n = [], 0
            batch.append(i)
            n += size
        if batch:
            yield batch


class ShardedBatches(Sampler[list[int]]):
    """One rank's share of every global batch of ``batches`` (lists of sequence indices),
    materialised at construction so that :attr:`shares` pairs with what iteration yields.

    Each global batch is split into ``world`` contiguous parts by sequence count (dialogues
    stay whole); ``shares[i]`` = ``n_rank / n_global`` utterances of batch i, from which the
    trainer scales the rank's loss so that DDP's gradient mean is the whole batch's gradient.
    A rank left without a sequence (a last batch smaller than ``world``) repeats the batch's
    first one with share 0, so that every rank takes part in every step.
    """

    def __init__(self, batches, lengths: np.ndarray, rank: int, world: int):
        self.batches, self.shares = [], []
        for batch in batches:
            batch = list(batch)
            part = np.array_split(np.asarray(batch, np.int64), world)[rank].tolist()
            total = float(sum(int(lengths[i]) for i in batch))
            if part:
                self.batches.append(part)
                self.shares.append(sum(int(lengths[i]) for i in part) / total)
            else:
                self.batches.append(batch[:1])
                self.shares.append(0.0)

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


@dataclass
class FoldData:
    """The data of one fold under one condition."""

    dataset: MERDataset
    fold: Fold
    condition: Condition
    seed: int = 0

    def _mask(self, draw: int) -> np.ndarray:
        return self.condition.mask(self.dataset.available, self.dataset.modalities,
                                   seed=self.seed, draw=draw)

    def train_mask(self, epoch: int) -> np.ndarray:
        """(n_utterances, M) bool: availability of every utterance in a conditioned epoch."""
        return self._mask(draw=epoch)

    def train_loader(self, epoch: int, conditioned: bool, batch_size: int,
                     sampler_factory: SamplerFactory | None = None,
                     batch_utterances: int | None = None,
                     shard: tuple[int, int] = (0, 1)) -> DataLoader:
        """Shuffled training batches of ``batch_size`` sequences, or with ``batch_utterances``
        of whole sequences up to that many utterances. ``shard=(rank, world)``: this rank's
        part of each of those (global) batches (:class:`ShardedBatches`)."""
        mask = self.train_mask(epoch) if conditioned else None
        ds = SequenceDataset(self.dataset, self.fold.train, mask)
        sampler = (sampler_factory or seeded_random_sampler(self.seed))(ds, epoch)
        lengths = np.array([len(self.dataset.sequences[s]) for s in ds.sequence_indices])
        batches = (UtteranceBudgetBatches(sampler, lengths, batch_utterances)
                   if batch_utterances is not None
                   else BatchSampler(sampler, batch_size, drop_last=False))
        if shard[1] > 1:
            batches = ShardedBatches(batches, lengths, *shard)
        return DataLoader(ds, batch_sampler=batches, collate_fn=ds.collate)

    def eval_loader(self, split: str, batch_size: int, condition: Condition | None = None,
                    shard: tuple[int, int] = (0, 1)) -> DataLoader:
        """Validation or test loader (``split`` in {"val", "test", "train"});
        ``shard=(rank, world)``: this rank's contiguous part of the split's sequences (in
        rank order, the parts are the whole split in its order)."""
        cond = condition or self.condition
        mask = cond.mask(self.dataset.available, self.dataset.modalities, seed=self.seed,
                         draw=EVAL_DRAW.get(split, 1_000_003))
        seqs = {"train": self.fold.train, "val": self.fold.val, "test": self.fold.test}[split]
        ds = SequenceDataset(self.dataset, seqs, mask)
        sampler = (SequentialSampler(ds) if shard[1] == 1 else
                   np.array_split(np.arange(len(ds)), shard[1])[shard[0]].tolist())
        return DataLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=ds.collate)
