"""Per-fold state of a HARDY-MER run: fine-tuned data, frozen teacher, feature database.

Built once per fold by :func:`prepare_context` (fine-tuning and teacher are cached on disk under
``RUN/fold<k>/_shared/hardymer/`` and reused by every condition), then asked by the model for
curriculum plans (one per distinct training mask, also cached in the cell folder).
"""
from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ...data.dataset import MERDataset, collate
from ...data.rows import RowView
from ...fileio import atomic_write_json
from ...protocol.conditions import canonical_name, parse_condition
from ...protocol.splits import official_train_sequences
from ...retrieval import FeatureDatabase, retrieve_supports, support_counts
from ...training.loaders import FoldData
from ...training.trainer import Trainer, resolve_device
from .estimate import batch_hardness_terms, combine_hardness, hardness_terms, reference_embeddings
from .finetune import FinetuneConfig, finetune_features
from .plan import CurriculumPlan, build_plan, mask_digest, rank_candidates
from .reference import ReferenceTeacher, ReferenceTeacherConfig, view_batches
from .teacher import Teacher, TeacherConfig, label_bins


class LeakWarning(UserWarning):
    """Features shaped by labels of utterances the fold tests on."""


def finetune_leak_message(what: str, n_sequences: int) -> str:
    return (f"model.finetune_scope=official-split: features fine-tuned once on the official "
            f"training split ({what}) and reused in every fold; {n_sequences} of this fold's "
            "test sequences are in that split, so their test labels shaped these features "
            "(the reference code's protocol: test labels of folds 1-4 shaped these features). "
            "Every result row records finetune_scope.")


def teacher_config(cfg) -> TeacherConfig:
    shared = {k: getattr(cfg, k) for k in ("hidden", "depth", "heads", "dropout", "attn_dropout",
                                           "attention", "prenorm", "skip_absent", "attention_groups",
                                           "dropout_impl",
                                           "temperature", "lambda_nce", "ind_estimator")}
    return TeacherConfig(**shared, mask_mode=cfg.teacher_mask)


def reference_teacher_config(cfg) -> ReferenceTeacherConfig:
    shared = {k: getattr(cfg, k) for k in ("hidden", "depth", "heads", "dropout", "attn_dropout",
                                           "attention", "prenorm", "dropout_impl")}
    return ReferenceTeacherConfig(**shared, rec_target=cfg.rec_target, attn_slip=cfg.attn_slip,
                                  row_bug=cfg.row_bug, mask_mode=cfg.teacher_mask)


def train_teacher(cfg, dataset: MERDataset, fold, train_config, condition_text: str | None,
                  workdir: Path | None, progress: bool):
    """Train (or resume / read back) the teacher of a fold; returns it frozen, in eval mode."""
    torch.manual_seed(cfg.teacher_seed)
    if cfg.teacher_kind == "reference":
        teacher = ReferenceTeacher(reference_teacher_config(cfg), dataset.dims,
                                   dataset.n_classes, dataset.task)
    else:
        teacher = Teacher(teacher_config(cfg), dataset.dims, dataset.n_classes, dataset.task)
        train_ids = dataset.rows_of(fold.train)
        y = label_bins(torch.from_numpy(dataset.labels[train_ids]), dataset.task,
                       teacher.config.n_bins)
        prior = torch.bincount(y, minlength=teacher.log_prior.numel()).double() + 1.0
        teacher.log_prior.copy_((prior / prior.sum()).log().float())
    mods = dataset.modalities
    cond = parse_condition(condition_text or canonical_name(mods, mods), mods)
    tcfg = replace(train_config, seed=cfg.teacher_seed, epochs=list(cfg.teacher_epochs))
    data = FoldData(dataset, fold, cond, seed=cfg.teacher_seed)
    Trainer(tcfg, workdir, progress=progress).fit(teacher, data, final_eval=False)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def prepare_context(cfg, dataset: MERDataset, fold, train_config, workdir: Path | None,
                    progress: bool = True) -> "FoldContext":
    """Fine-tune features, train the teacher, build the database — once per fold."""
    device = resolve_device(train_config.device)
    workdir = Path(workdir) if workdir is not None else None
    raw = dataset
    if cfg.finetune:
        ft = FinetuneConfig(epochs=cfg.finetune_epochs, lr=cfg.finetune_lr,
                            seed=cfg.finetune_seed, batch_size=cfg.finetune_batch,
                            net=cfg.finetune_net, output=cfg.finetune_output)
        train, val = fold.train, fold.val
        if cfg.finetune_scope == "official-split":
            train, what = official_train_sequences(dataset)
            val = np.array([], np.int64)
            leaked = np.intersect1d(train, fold.test)
            if len(leaked):
                warnings.warn(finetune_leak_message(what, len(leaked)), LeakWarning,
                              stacklevel=2)
        feats = finetune_features(dataset, train, val, ft, device,
                                  workdir / "finetune" if workdir else None, progress)
        dataset = replace(dataset, features=feats)
    # The features the teacher reads: raw (default) or the fine-tuned ones.
    teacher_dataset = raw if cfg.teacher_features == "raw" else dataset
    teacher = None
    if cfg.needs_teacher and cfg.teacher_mask == "random":
        teacher = train_teacher(cfg, teacher_dataset, fold, train_config, None,
                                workdir / "teacher" if workdir else None, progress)
    return FoldContext(cfg, dataset, teacher_dataset, fold, teacher, device, train_config,
                       progress)


class FoldContext:
    """What HARDY-MER needs of a fold besides its data loaders.

    Attributes
    ----------
    dataset : MERDataset (fine-tuned features unless ``finetune=false``)
    teacher_dataset : MERDataset the teacher reads (``teacher_features``)
    train_ids : (Q,) global ids of the training utterances, in sequence order
    complete_ids : global ids of training utterances with every modality present (the database)
    database : FeatureDatabase or None (no retrieval)
    seq_of, pos_of : (n_utterances,) sequence index and position of every utterance
    """

    def __init__(self, cfg, dataset, teacher_dataset, fold, teacher, device, train_config,
                 progress):
        self.cfg, self.dataset, self.fold, self.teacher = cfg, dataset, fold, teacher
        self.teacher_dataset = teacher_dataset
        self.device, self.train_config, self.progress = device, train_config, progress
        self.train_ids = dataset.rows_of(fold.train)
        self.complete_ids = self.train_ids[dataset.available[self.train_ids].all(1)]
        n = dataset.n_utterances
        self.seq_of = np.full(n, -1, np.int64)
        self.pos_of = np.full(n, -1, np.int64)
        for s, rows in enumerate(dataset.sequences):
            self.seq_of[rows] = s
            self.pos_of[rows] = np.arange(len(rows))
        self.database = None
        if cfg.retrieval:
            # A view, not a copy: the database reads the (possibly mapped) rows it needs.
            feats = {m: RowView(dataset.features[m], self.complete_ids)
                     for m in dataset.modalities}
            self.database = FeatureDatabase.build(feats, ids=self.complete_ids, kind=cfg.index,
                                                  device=str(device))
        self.condition_is_random = False
        self._ref = None
        self._plans: dict = {}

    # --- per cell -----------------------------------------------------------------------------
    def attach_cell(self, data, workdir: Path | None) -> None:
        self.condition_is_random = data.condition.is_random
        if self.cfg.needs_teacher and self.cfg.teacher_mask == "condition":
            self.teacher = train_teacher(self.cfg, self.teacher_dataset, self.fold,
                                         self.train_config, data.condition.name,
                                         workdir / "teacher" if workdir else None,
                                         self.progress)
            self._ref = None

    # --- plans --------------------------------------------------------------------------------
    def _terms(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.teacher is None:
            z = np.zeros(len(self.train_ids))
            return z, z.copy()
        if isinstance(self.teacher, ReferenceTeacher):
            return self._reference_terms(mask)
        t = hardness_terms(self.teacher.to(self.device), self.teacher_dataset, self.fold.train,
                           mask, self.complete_ids, self.device,
                           dir_error=self.cfg.dir_error)
        assert np.array_equal(t.ids, self.train_ids)
        return t.h_dir, t.h_ind

    @torch.no_grad()
    def _reference_terms(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The reference teacher's raw terms of every training utterance, dialogue by dialogue
        (for the plan that ``hardymer hardness`` shows; training uses per-batch hardness)."""
        teacher = self.teacher.to(self.device).eval()
        seqs = [self.dataset.sequences[s] for s in self.fold.train]
        d, i = [], []
        for a in range(0, len(seqs), 16):
            b = collate(self.dataset, seqs[a:a + 16], mask).to(self.device)
            rec, mi = teacher.terms(b)
            d.append(rec[b.utt_mask].double().cpu().numpy())
            i.append(mi[b.utt_mask].double().cpu().numpy())
        return np.concatenate(d), np.concatenate(i)

    def plan(self, mask: np.ndarray, epoch: int, workdir: Path | None) -> CurriculumPlan:
        """The plan for a training mask: read from ``workdir/curriculum`` or computed there."""
        key = mask_digest(mask)
        path = workdir / "curriculum" / f"plan-{key}.npz" if workdir is not None else None
        if (workdir, key) in self._plans:
            plan = self._plans[workdir, key]
        elif path is not None and path.is_file():
            plan = CurriculumPlan.load(path)
        else:
            cfg = self.cfg
            d_raw, i_raw = self._terms(mask)
            norm = self._combine(d_raw, i_raw, cfg, cfg.hardness_norm)
            cand = rank_candidates(self.database, self.dataset.features, self.train_ids,
                                   mask[self.train_ids], cfg.k, cfg.ranking)
            plan = build_plan(self.train_ids, mask[self.train_ids], d_raw, i_raw, norm, cand,
                              cfg.k, cfg.k_rule, cfg.needs_teacher)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                plan.save(path)
        if not self.condition_is_random:  # a random condition has a new mask every epoch
            self._plans = {(workdir, key): plan}
        if workdir is not None:
            searched = workdir / "curriculum" / "database.json"
            if self.database is not None and not searched.is_file():
                # which index the plans searched (model.index=auto chooses by size)
                atomic_write_json(searched, {"kind": self.database.kind,
                                             "n": len(self.database),
                                             "params": self.database.params})
            index = workdir / "curriculum" / "epochs.json"
            have = json.loads(index.read_text()) if index.is_file() else {}
            if have.get(str(epoch)) != key:
                have[str(epoch)] = key
                atomic_write_json(index, have)
        return plan

    @staticmethod
    def _combine(d_raw: np.ndarray, i_raw: np.ndarray, cfg, norm: str):
        """:func:`combine_hardness` with the config's switches and fusion."""
        return combine_hardness(d_raw, i_raw, use_dir=cfg.use_h_dir, use_ind=cfg.use_h_ind,
                                fusion=cfg.hardness_fusion, norm=norm, beta=cfg.sigmoid_beta,
                                alpha_dir=cfg.alpha_dir, alpha_ind=cfg.alpha_ind)

    def batch_k_prime(self, d_raw: np.ndarray, i_raw: np.ndarray, cfg) -> np.ndarray:
        """k' from hardness normalised within one batch (reference: per-batch min-max)."""
        if not cfg.needs_teacher:
            return np.full(len(d_raw), cfg.k, np.int64)
        _, _, h = self._combine(d_raw, i_raw, cfg, "minmax")
        return support_counts(h, cfg.k, cfg.k_rule)

    def view_batches(self, batch, cfg, plan_h=None):
        """The reference's k + 1 views of a batch (:func:`reference.view_batches`)."""
        teacher = self.teacher if cfg.teacher_kind == "reference" and cfg.needs_teacher \
            else None
        if teacher is not None:
            teacher.to(batch.utt_mask.device)
        return view_batches(batch, cfg, self.database, self.dataset.features, teacher, plan_h,
                            self.dataset.labels)

    # --- the reference's per-step pipeline (plan_scope="step") --------------------------------
    @torch.no_grad()
    def step_supports(self, batch, cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Teacher forward + FAISS search for one batch, as the reference does every step."""
        qids = batch.index[batch.utt_mask].cpu().numpy()
        if self.teacher is not None:
            if self._ref is None:
                self._ref = reference_embeddings(self.teacher, self.teacher_dataset.features,
                                                 self.complete_ids, self.device)
            tb = batch if self.teacher_dataset is self.dataset else \
                _with_features(batch, self.teacher_dataset)
            d, i, _ = batch_hardness_terms(self.teacher, tb, self._ref)
            kp = self.batch_k_prime(d.double().cpu().numpy(), i.double().cpu().numpy(), cfg)
        else:
            kp = np.full(len(qids), cfg.k, np.int64)
        avail = batch.available[batch.utt_mask].cpu().numpy()
        query = {m: np.asarray(self.dataset.features[m][qids], np.float32)
                 for m in self.dataset.modalities}
        lists = retrieve_supports(self.database, query, qids, avail, hardness=1.0, k=cfg.k,
                                  ranking=cfg.ranking)
        return qids, np.minimum(kp, lists.k_prime), lists.ids


def _with_features(batch, dataset: MERDataset):
    """The same batch with another data set's features (the teacher's raw ones)."""
    index = batch.index.cpu().numpy()
    rows = [r[r >= 0] for r in index]
    other = collate(dataset, rows).to(batch.utt_mask.device)
    return replace(batch, x=other.x)
