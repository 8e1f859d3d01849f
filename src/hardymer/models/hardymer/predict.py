"""What ``predict`` adds for HARDY-MER (the method's :class:`PredictExtras`).

* New utterances go through the fold's fine-tuning networks (the features training read).
* Their own ``h_ind`` is computed as in training: the fold's teacher, normalised over the
  training set's raw values in the cell's plan. Their combined ``h`` cannot be, since
  ``h_dir`` needs the true values of the missing modalities, which a deployment sample does
  not have; ``h`` is the mean h of its nearest training neighbours under the same pattern, as
  the fold's curriculum plan scored them (spec §1.3).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ...data.dataset import MERDataset, pick_rows, sequences_batch
from ...fileio import atomic_save_npy, atomic_write_json
from ...training.checkpoint import checkpoint_exists, export_weights, load_checkpoint
from ...training.method import PredictExtras
from .context import teacher_config
from .estimate import batch_hardness_terms, reference_embeddings
from .finetune import load_finetuner, transform
from .plan import CurriculumPlan, first_plan, first_plan_key
from .teacher import Teacher


class HardyPredictExtras(PredictExtras):
    """Built once per predictor; networks and the teacher are loaded on first use."""

    def __init__(self, config, fold_dir: Path, dataset: MERDataset, inputs: MERDataset,
                 reference: MERDataset, train_ids: np.ndarray, device: torch.device):
        self.cfg = config
        self.fold_dir, self.dataset, self.inputs = Path(fold_dir), dataset, inputs
        self.teacher_view = reference        # what training's teacher and plans read
        self.train_ids, self.device = train_ids, device
        self._finetuners = None
        self._teacher = None
        self._plans: dict[Path, object] = {}   # cell -> its first plan (read once)

    def _plan(self, cell: Path):
        if cell not in self._plans:
            self._plans[cell] = first_plan(cell)
        return self._plans[cell]

    def neighbour_data(self, reference: MERDataset) -> MERDataset:
        return reference

    def features(self, features, available):
        """Fine-tuned features of new rows (the fold's networks); raw when not fine-tuned."""
        if not self.cfg.finetune:
            return features
        mods = self.dataset.modalities
        if self._finetuners is None:   # loaded once per predictor, not per call
            self._finetuners = {m: load_finetuner(self.fold_dir / "finetune", m,
                                                  self.dataset.dims[m],
                                                  self.dataset.n_classes).to(self.device)
                                for m in mods}
        out = {}
        for j, m in enumerate(mods):
            x = transform(self._finetuners[m], features[m], self.device)
            x[~available[:, j]] = 0.0
            out[m] = x
        return out

    def neighbour_hardness(self, cell: Path, ids):
        """Per-neighbour curriculum hardness h (Q, k), NaN where unknown; None if no plan."""
        plan = self._plan(Path(cell))
        if plan is None:
            return None
        lookup = np.full(self.dataset.n_utterances, np.nan)
        lookup[plan.ids] = plan.h
        return np.where(ids >= 0, lookup[np.maximum(ids, 0)], np.nan)

    @torch.no_grad()
    def own_hardness(self, cell: Path, queries: MERDataset, rows: np.ndarray):
        """The queries' own indirect hardness (spec §1.3: minus the mean pmi of their modality
        pairs, missing ones from the teacher's reconstructions), min-max (or rank) normalised
        against the training set's raw values in the cell's plan; None if not applicable.
        ``queries`` holds the raw (not fine-tuned) features."""
        cfg = self.cfg
        if not (cfg.needs_teacher and cfg.use_h_ind):
            return None
        folder = (self.fold_dir if cfg.teacher_mask == "random" else Path(cell)) / "teacher"
        plan = self._plan(Path(cell))
        if plan is None or not checkpoint_exists(folder / "last"):
            return None
        if self._teacher is None or self._teacher[0] != folder:
            ds = self.dataset
            teacher = Teacher(teacher_config(cfg), ds.dims, ds.n_classes, ds.task)
            load_checkpoint(folder / "last", teacher)
            teacher = teacher.to(self.device).eval()
            tds = self.inputs if cfg.teacher_features == "raw" else self.teacher_view
            complete = self.train_ids[tds.available[self.train_ids].all(1)]
            ref = reference_embeddings(teacher, tds.features, complete, self.device)
            self._teacher = (folder, teacher, ref)
        _, teacher, ref = self._teacher
        if cfg.teacher_features != "raw":
            queries = replace(queries, features=self.features(dict(queries.features),
                                                              queries.available))
        batch = sequences_batch(queries, rows, None).to(self.device)
        _, h_ind, ids = batch_hardness_terms(teacher, batch, ref)
        x = pick_rows(h_ind.double().cpu().numpy(), ids.cpu().numpy(), rows)
        train = plan.h_ind_raw
        how = "minmax" if cfg.hardness_fusion == "sigmoid" else cfg.hardness_norm
        if how == "rank":   # the average-rank position it would take among the training set
            n = max(len(train) - 1, 1)
            return {"h_ind": np.clip([((train < v).sum() + ((train == v).sum() - 1) / 2) / n
                                      for v in x], 0.0, 1.0)}
        span = np.ptp(train)
        return {"h_ind": np.clip((x - train.min()) / span, 0.0, 1.0) if span > 1e-12
                else np.zeros_like(x)}


def export_fold_files(cfg, fold_dir: Path, out_dir: Path, cells: dict[str, tuple[Path, Path]],
                      rows: np.ndarray) -> None:
    """What :class:`HardyPredictExtras` and ``test_time_dataset`` read, for an export whose
    utterance ``i`` is the run's utterance ``rows[i]``."""
    new_id = np.full(int(rows.max()) + 1 if len(rows) else 0, -1, np.int64)
    new_id[rows] = np.arange(len(rows))

    def renumber(ids: np.ndarray) -> np.ndarray:
        out = np.where(ids >= 0, new_id[np.clip(ids, 0, len(new_id) - 1)], -1)
        if ((ids >= 0) & ((ids >= len(new_id)) | (out < 0))).any():
            raise ValueError("a curriculum plan names utterances outside the fold's training "
                             "split: this run folder does not match its data")
        return out
    src = fold_dir / "finetune"
    if cfg.finetune and (src / "finetune.json").is_file():
        dst = out_dir / "finetune"
        dst.mkdir(parents=True, exist_ok=True)
        meta = json.loads((src / "finetune.json").read_text())
        for f in src.glob("*.safetensors"):
            shutil.copyfile(f, dst / f.name)
        for f in src.glob("*.npy"):     # the fine-tuned features of the exported rows
            atomic_save_npy(dst / f.name, np.asarray(np.load(f, mmap_mode="r")[rows]))
        atomic_write_json(dst / "finetune.json", meta)    # the marker, last
    teachers = [(fold_dir / "teacher", out_dir / "teacher")] if cfg.teacher_mask == "random" \
        else [(cell / "teacher", out / "teacher") for cell, out in cells.values()]
    for a, b in teachers:
        if checkpoint_exists(a / "last"):
            export_weights(a / "last", b / "last")
    for cell, out in cells.values():
        key = first_plan_key(cell)
        if key is None:
            continue
        plan = CurriculumPlan.load(cell / "curriculum" / f"plan-{key[1]}.npz")
        plan = replace(plan, ids=renumber(plan.ids), support_ids=renumber(plan.support_ids))
        plan.save(out / "curriculum" / f"plan-{key[1]}.npz")
        atomic_write_json(out / "curriculum" / "epochs.json", {key[0]: key[1]})
