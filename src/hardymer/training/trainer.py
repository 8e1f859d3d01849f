"""The one training loop every method uses.

The trainer owns epochs, stages, the optimizer step, logging, checkpoints, resumption and
model selection; a method contributes ``stages()``, ``stage_loss()`` and ``forward()``.

Selection (``TrainConfig.protocol``):
  ``val``   — keep the epoch with the best validation metric; test is evaluated once, at the end;
  ``paper`` — keep the epoch with the best *test* metric (the MoMKE / HARDY-MER papers' rule).
Only epochs of stages with ``select=True`` compete (MoMKE: stage 2).

Data-parallel (``dist``, :mod:`~hardymer.training.distributed`): each rank trains on its share
of every global batch through DistributedDataParallel, evaluation is split and gathered, and
rank 0 alone writes; a run on N processes computes what one process computes.

Files in ``out_dir`` (rank 0 only): ``last.{safetensors,json}`` on the cadence of
``checkpoint_every`` (auto: writes take at most ~5 % of the time; always at a stage's end),
``best.{safetensors,json}`` when selection improves, ``metrics.jsonl`` and ``metrics.csv``
(one row per epoch). A killed run restarted with the same ``out_dir`` resumes from ``last``,
replays the epochs after it, and ends with the same metrics as an uninterrupted run.

Early stopping (``patience``) ends the fit after that many selection epochs without
improvement; the stop is recorded in ``last``, so a restart does not train on.
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..fileio import atomic_write_text
from ..metrics import better, compute_metrics, default_selection_metric
from .checkpoint import checkpoint_exists, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .distributed import SINGLE, Distributed, seed_of
from .loaders import FoldData, SamplerFactory
from .method import Method, Stage
from .tracking import open_trackers


log = logging.getLogger(__name__)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else (
        f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h")


def read_history(folder: Path) -> list[dict]:
    """The epoch rows a fit in ``folder`` logged (its ``metrics.jsonl``); [] when none."""
    path = Path(folder) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class Predictions:
    """Per-utterance outputs of one pass over a split.

    ``index`` (N,) global utterance ids; ``labels`` (N,); ``outputs`` (N, C) logits or (N, 1)
    regression values; ``preds`` (N,) class ids or values.
    """

    index: np.ndarray
    labels: np.ndarray
    outputs: np.ndarray
    preds: np.ndarray


@torch.no_grad()
def predict(method: Method, loader, device: torch.device,
            dist: Distributed = SINGLE) -> Predictions:
    """One pass over ``loader``; with ``dist``, each rank's loader holds its share of the
    split and the result is every rank's, gathered in rank order (the whole split)."""
    method.eval()
    idx, lab, out = [], [], []
    for batch in loader:
        batch = batch.to(device)
        o = method(batch)                       # (B, S, C)
        m = batch.utt_mask
        idx.append(batch.index[m].cpu())
        lab.append(batch.labels[m].cpu())
        out.append(o[m].float().cpu())
    width = method.n_outputs
    index, labels, outputs = (torch.cat(t).numpy() if t else np.zeros((0,) + shape, dtype)
                              for t, shape, dtype in ((idx, (), np.int64), (lab, (), np.int64),
                                                      (out, (width,), np.float32)))
    if dist.active:
        parts = dist.gather_objects((index, labels, outputs))
        index, labels, outputs = (np.concatenate([p[i] for p in parts]) for i in range(3))
    preds = outputs.argmax(-1) if method.task == "classification" else outputs[:, 0]
    return Predictions(index, labels, outputs, preds)


def evaluate(method: Method, loader, device: torch.device,
             dist: Distributed = SINGLE) -> dict[str, float]:
    p = predict(method, loader, device, dist)
    return compute_metrics(method.task, p.labels, p.preds)


def precision_context(precision: str, device: torch.device):
    """The context of a training step's forward pass: bfloat16 autocast under
    ``train.precision=bfloat16``; nothing otherwise. Backward runs outside it."""
    if precision == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def bf16_is_native(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware (CUDA, or a CPU whose
    oneDNN has bf16 kernels); elsewhere autocast to bfloat16 is a slowdown."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@dataclass
class FitResult:
    selected_epoch: int | None
    val: dict[str, float]
    test: dict[str, float]
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


class Trainer:
    """Train a method on a :class:`FoldData` under a :class:`TrainConfig`.

    Parameters
    ----------
    config : TrainConfig
    out_dir : Path or None
        Where checkpoints and logs go; None keeps everything in memory (tests).
    dist : Distributed
        The data-parallel group (:meth:`Distributed.from_env` under torchrun); only rank 0
        writes files. Default: one process.
    sampler_factory : callable, optional
        ``(dataset, epoch) -> Sampler`` for training batches; default: seeded shuffle.
    progress : bool
        Show tqdm progress bars.
    on_epoch_end : callable, optional
        Called with the epoch's log row (used by tests to interrupt a run).
    """

    def __init__(self, config: TrainConfig, out_dir: Path | None = None,
                 dist: Distributed = SINGLE, sampler_factory: SamplerFactory | None = None,
                 progress: bool = True, on_epoch_end: Callable[[dict], None] | None = None):
        self.config, self.dist = config, dist
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.sampler_factory, self.progress = sampler_factory, progress and dist.is_main
        self.on_epoch_end = on_epoch_end
        self.device = dist.device(resolve_device(config.device))
        if config.precision == "bfloat16" and not bf16_is_native(self.device):
            warnings.warn(
                "train.precision=bfloat16 on a device without bfloat16 units (a CPU without "
                "AVX512-BF16 or AMX, or an older GPU): its matrix products are emulated and run "
                "far slower than float32 (10x for a training step on this project's CI "
                "machine, docs/experiments.md); use train.precision=float32 here",
                RuntimeWarning, stacklevel=2)

    @property
    def writes(self) -> bool:
        return self.out_dir is not None and self.dist.is_main

    def _eval(self, method, data, split: str) -> dict[str, float]:
        return evaluate(method, data.eval_loader(split, self.config.eval_batch_size,
                                                 shard=self.dist.shard), self.device, self.dist)

    def fit(self, method: Method, data: FoldData, stages: list[Stage] | None = None,
            init_from: Path | None = None, final_eval: bool = True) -> FitResult:
        """Run every stage, resuming from ``out_dir/last`` (or ``init_from``) when present.

        ``init_from`` is a checkpoint of an earlier run of the same method and fold whose
        completed epochs are kept (MoMKE's stage 1 shared across conditions).
        """
        cfg = self.config
        t0 = time.perf_counter()
        self._best_in_memory = None
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        method.to(self.device)
        stages = stages if stages is not None else method.stages(list(cfg.epochs))
        optimizer = method.configure_optimizer(cfg.lr, cfg.weight_decay,
                                               fused=cfg.fused_optimizer)
        metric = cfg.select_metric or default_selection_metric(method.task)
        state = {"epoch": 0, "best": None, "best_epoch": None, "history": [], "stopped": None}

        last = self.out_dir / "last" if self.out_dir is not None else None
        source = last if last is not None and checkpoint_exists(last) else init_from
        if source is not None and checkpoint_exists(source):
            saved = load_checkpoint(source, method, optimizer, restore_rng=True,
                                    rank=self.dist.rank)
            state.update({k: saved.get(k, state[k]) for k in state})
            if source != last:  # inherited epochs: selection restarts in this run
                state["best"], state["best_epoch"], state["stopped"] = None, None, None
        else:
            torch.manual_seed(seed_of(cfg.seed, self.dist.rank))
        self.dist.barrier()   # every rank has read `last` before rank 0 writes a new one

        total = sum(s.epochs for s in stages)
        trackers = (open_trackers(cfg.log, self.out_dir, state["epoch"] + 1)
                    if self.writes and state["epoch"] < total and state["stopped"] is None
                    else [])
        desc = f"{getattr(method, 'method_name', 'train')} [{data.condition.name}]"
        bar = tqdm(total=total, initial=state["epoch"], disable=not self.progress, desc=desc,
                   unit="epoch", leave=False)
        self._ckpt = {"cost": None, "since": 0.0, "written": state["epoch"]}
        epoch, timed = 0, False
        for stage in stages:
            stage = replace(stage, start=epoch)
            step = None   # wrapped per stage: DDP registers the parameters that train now
            for i in range(stage.epochs):
                epoch += 1
                if epoch <= state["epoch"] or state["stopped"] is not None:
                    continue  # done before the restart, or stopped early
                t_epoch = time.perf_counter()
                step = step or self.dist.wrap(method)
                row = self._run_epoch(method, step, optimizer, data, stage, epoch, metric,
                                      state)
                if self._stale(state, metric):
                    state["stopped"] = epoch
                    judged = self._judged(metric).replace("_", " ", 1)   # "val WA"
                    self._note(bar, f"{desc}: early stop after epoch {epoch}: no better "
                               f"{judged} for {cfg.patience} epochs (best: epoch "
                               f"{state['best_epoch']})")
                self._save_last(method, optimizer, state, time.perf_counter() - t_epoch,
                                end=i == stage.epochs - 1 or state["stopped"] is not None)
                bar.update(1)
                if not timed and epoch < total:
                    timed, secs = True, time.perf_counter() - t_epoch
                    self._note(bar, f"{desc}: first epoch {secs:.1f} s; estimated "
                               f"{_duration(secs * (total - epoch))} for the {total - epoch} "
                               "epochs left of this fit")
                bar.set_postfix({k: f"{v:.3f}" for k, v in row.items()
                                 if k.startswith(("val_", "test_")) and k.endswith(metric)})
                for tracker in trackers:
                    tracker.log(row)
                if self.on_epoch_end is not None:
                    self.on_epoch_end(row)
        bar.close()
        for tracker in trackers:
            tracker.close()
        self.dist.barrier()   # rank 0's last checkpoint is on disk for whoever reads it next
        if not final_eval:
            return FitResult(None, {}, {}, state["history"], time.perf_counter() - t0)
        return self._finish(method, data, metric, state, time.perf_counter() - t0)

    def _judged(self, metric: str) -> str:
        """The log key selection reads: ``test_<metric>`` under ``paper``, else ``val_``."""
        return ("test_" if self.config.protocol == "paper" else "val_") + metric

    def _note(self, bar, note: str) -> None:
        if not self.dist.is_main:
            return
        if self.progress:
            bar.write(note, file=bar.fp)
        else:  # shown when the caller asks for hardymer's INFO logs (train does)
            log.info(note)

    def _stale(self, state, metric) -> bool:
        """True when ``patience`` selection epochs have passed since the best one."""
        if self.config.patience is None or state["best_epoch"] is None:
            return False
        key = self._judged(metric)
        judged = [r for r in state["history"] if key in r and r["epoch"] > state["best_epoch"]]
        return len(judged) >= self.config.patience

    def _rank_rng(self) -> list[torch.Tensor] | None:
        """Every rank's torch RNG state on rank 0 (a resume restores each its own)."""
        if not self.dist.active:
            return None
        return self.dist.gather_objects(torch.get_rng_state())

    def _save_last(self, method, optimizer, state, epoch_seconds: float, end: bool) -> None:
        """Write ``last`` on the cadence of ``checkpoint_every`` (always at a stage's end).

        Auto (0) writes when the training time since the last write is at least 20x what that
        write cost, so checkpoints take at most ~5 % of the time. Skipped epochs cost nothing
        on a restart but their replay: loaders and RNG are restored from ``last``.
        """
        if self.out_dir is None:
            return
        ck, every = self._ckpt, self.config.checkpoint_every
        ck["since"] += epoch_seconds
        due = (state["epoch"] - ck["written"] >= every) if every else (
            ck["cost"] is None or ck["since"] >= 20 * ck["cost"])
        if self.dist.broadcast_object(due or end):   # rank 0's clock decides for all
            t0 = time.perf_counter()
            rank_rng = self._rank_rng()
            if self.writes:
                save_checkpoint(self.out_dir / "last", method, optimizer, state,
                                rank_rng=rank_rng)
            ck.update(cost=time.perf_counter() - t0, since=0.0, written=state["epoch"])
        if self.writes:   # rewritten whole from the history: no duplicate rows after a restart
            atomic_write_text(self.out_dir / "metrics.jsonl",
                              "".join(json.dumps(r) + "\n" for r in state["history"]))

    def _loss_scales(self, method, loader) -> list[float] | None:
        """Distributed: the factor of each batch's loss on this rank such that DDP's mean of
        the ranks' gradients is the gradient of the whole batch's loss — ``world * share`` of
        a per-utterance mean, ``world`` (0 for an empty share) of a sum
        (``Method.loss_reduction``); None in one process."""
        shares = getattr(loader.batch_sampler, "shares", None)
        if shares is None:
            return None
        w = self.dist.world
        if method.loss_reduction == "sum":
            return [w * float(s > 0) for s in shares]
        return [w * s for s in shares]

    # --- one epoch ----------------------------------------------------------------------------
    def _run_epoch(self, method, step, optimizer, data, stage, epoch, metric, state) -> dict:
        """One epoch; ``step`` runs a loss computation (:meth:`Distributed.wrap`)."""
        cfg = self.config
        method.train()
        method.on_epoch_start(epoch, stage, data)
        for group in optimizer.param_groups:
            group.update(method.optimizer_settings(stage))
        loader = data.train_loader(epoch, stage.apply_condition, cfg.batch_size,
                                   self.sampler_factory, cfg.batch_utterances,
                                   shard=self.dist.shard)
        scales = self._loss_scales(method, loader)
        sums: dict[str, float] = {}
        n_batches, n_utts, t0 = 0, 0, time.perf_counter()
        for b, batch in enumerate(loader):
            batch = batch.to(self.device)
            optimizer.zero_grad(set_to_none=True)   # once per batch: steps of one batch add up
            n_steps, batch_sums = 0, {}
            for compute in method.stage_steps(batch, stage):
                with precision_context(cfg.precision, self.device):
                    loss, parts = step(compute)
                (loss if scales is None else loss * scales[b]).backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(method.parameters(), cfg.grad_clip)
                optimizer.step()
                n_steps += 1
                for k, v in {"loss": float(loss.detach()), **parts}.items():
                    batch_sums[k] = batch_sums.get(k, 0.0) + v
            n_batches += 1
            n_utts += batch.n_utterances if scales is None or scales[b] else 0
            for k, v in batch_sums.items():   # a batch of several steps logs their mean
                sums[k] = sums.get(k, 0.0) + v / max(n_steps, 1)
        means = self.dist.mean_of({k: v / max(n_batches, 1) for k, v in sums.items()})
        seconds = time.perf_counter() - t0
        n_utts = sum(self.dist.gather_objects(n_utts))   # every rank's share: the global rate
        row = {"epoch": epoch, "stage": stage.name,
               **{f"train_{k}": v for k, v in means.items()},
               "lr": optimizer.param_groups[0]["lr"],
               "train_seconds": seconds,
               "train_utt_per_s": n_utts / max(seconds, 1e-9)}
        if stage.select:
            t_eval = time.perf_counter()
            splits = ["val", "test"] if cfg.protocol == "paper" else ["val"]
            for split in splits:
                res = self._eval(method, data, split)
                row.update({f"{split}_{k}": v for k, v in res.items()})
            row["eval_seconds"] = time.perf_counter() - t_eval
            judge = row[self._judged(metric)]
            if better(metric, judge, state["best"]):
                state["best"], state["best_epoch"] = judge, epoch
                if self.writes:
                    save_checkpoint(self.out_dir / "best", method, None, {"epoch": epoch})
                else:
                    self._best_in_memory = {k: v.detach().clone()
                                            for k, v in method.state_dict().items()}
        state["epoch"] = epoch
        state["history"].append(row)
        return row

    # --- selection and final evaluation -------------------------------------------------------
    def _finish(self, method, data, metric, state, seconds) -> FitResult:
        if state["best_epoch"] is not None:
            if self.out_dir is not None and checkpoint_exists(self.out_dir / "best"):
                load_checkpoint(self.out_dir / "best", method)
            elif self._best_in_memory is not None:
                method.load_state_dict(self._best_in_memory)
        val, test = self._eval(method, data, "val"), self._eval(method, data, "test")
        if self.writes:
            pd.DataFrame(state["history"]).to_csv(self.out_dir / "metrics.csv", index=False)
        return FitResult(state["best_epoch"], val, test, state["history"], seconds)
