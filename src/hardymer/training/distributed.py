"""Data-parallel training: the process group ``torchrun`` starts, as one small object.

``torchrun --nproc-per-node N -m hardymer train ...`` starts N processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment; :meth:`Distributed.from_env` joins them
into one group (gloo on CPU, NCCL on CUDA, chosen from the device) and every part of a run that
needs to know gets this object passed in — nothing here is global state. Without torchrun (or
with one process) it is :data:`SINGLE`, whose every collective is a no-op.

What the trainer does with it (docs/scale.md):
- ``train.batch_size`` stays the *global* batch: the sequences of each global batch are split
  between the ranks (:class:`~hardymer.training.loaders.ShardedBatches`), and each rank's loss
  is scaled by ``world * n_rank / n_global`` utterances, so the gradient DDP averages is the
  gradient of the whole batch's per-utterance mean: a run on N processes computes what one
  process computes with the same settings (up to float rounding, for losses that are
  per-utterance means; batch-level terms such as PriMD's HSIC see their rank's shard only);
- rank 0 alone writes checkpoints, logs, plans and results; the others wait at barriers;
- evaluation is split the same way and the predictions are gathered, so every rank selects the
  same epoch.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator

import torch
import torch.distributed as tdist
from torch import nn

#: How long a rank waits at a barrier for the others (rank 0 may train a fold's preparation,
#: e.g. HARDY-MER's teacher, while the others wait): ``HARDYMER_DIST_TIMEOUT`` seconds.
DEFAULT_TIMEOUT_S = 6 * 3600


def launched() -> tuple[int, int]:
    """``(rank, world)`` as torchrun's environment gives them (``(0, 1)`` without torchrun),
    read without joining the group: for code that must only know whether it speaks."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


@dataclass(frozen=True)
class Distributed:
    """One process's place in a data-parallel group (``world == 1``: not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str = "auto") -> "Distributed":
        """The group torchrun describes in the environment (joined on first use), or
        :data:`SINGLE` when ``WORLD_SIZE`` is unset or 1."""
        rank, world = launched()
        if world <= 1:
            return SINGLE
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if not tdist.is_initialized():
            cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
            if cuda:
                torch.cuda.set_device(local)
            timeout = float(os.environ.get("HARDYMER_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
            tdist.init_process_group("nccl" if cuda else "gloo",
                                     timeout=timedelta(seconds=timeout))
        return cls(rank, world, local)

    @property
    def shard(self) -> tuple[int, int]:
        """``(rank, world)``: which share of a split or batch is this rank's."""
        return self.rank, self.world

    def device(self, device: torch.device) -> torch.device:
        """This rank's device: ``cuda:LOCAL_RANK`` when the run is on CUDA."""
        if self.active and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    # --- collectives (no-ops in one process) --------------------------------------------------
    def barrier(self) -> None:
        if self.active:
            tdist.barrier()

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (it writes a shared file or cache) while the others
        wait; then the others run it (they read what rank 0 wrote)."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def gather_objects(self, obj) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.active:
            return [obj]
        out = [None] * self.world
        tdist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    def mean_of(self, values: dict[str, float]) -> dict[str, float]:
        """Each key's mean over the ranks (log values; keys must agree)."""
        if not self.active:
            return values
        every = self.gather_objects(values)   # (an object collective: any backend, any device)
        return {k: sum(v[k] for v in every) / self.world for k in values}

    def wrap(self, method: nn.Module) -> "StepModule":
        """A callable that runs one loss computation so that its backward averages the
        gradients over the ranks (DistributedDataParallel); in one process, it just calls."""
        step = StepModule(method)
        if not self.active or not any(p.requires_grad for p in method.parameters()):
            return step   # (DDP refuses a module with nothing to train: nothing to reduce)
        dev = next(method.parameters()).device
        return nn.parallel.DistributedDataParallel(
            step, device_ids=[dev.index] if dev.type == "cuda" else None,
            # a modality absent from a rank's batch leaves its expert without a gradient there
            find_unused_parameters=True)


class StepModule(nn.Module):
    """The method behind DDP: its forward is "compute this loss" (``fn()``, e.g. the next of
    the method's :meth:`~hardymer.training.method.Method.stage_steps`), so every method's own
    losses run inside DDP's forward and their backward reduces the gradients."""

    def __init__(self, method: nn.Module):
        super().__init__()
        self.method = method

    def forward(self, fn):
        return fn()


SINGLE = Distributed()


def seed_of(seed: int, rank: int) -> int:
    """The torch seed of ``rank`` (rank 0 keeps ``seed``: one process runs as before), so
    ranks draw different dropout masks."""
    return seed if rank == 0 else (seed * 1_000_003 + rank) % (2 ** 63)
