"""HARDY-MER — hardness-aware dynamic curriculum learning (Zuo et al., ACM MM 2025).

Per fold (``prepare_fold``, cached and shared by every condition):
  1. fine-tune each modality's features on the fold's training split (``finetune``);
  2. train the teacher (MoMKE + decoders + InfoNCE critic) with random masks (``teacher``,
     ``estimate``);
  3. build the FAISS feature database over the complete training samples (``retrieval/``).
Per (fold, condition), before the conditioned stage (``on_epoch_start``):
  4. hardness ``h`` of every training sample and its ranked candidates -> a
     :class:`~hardymer.models.hardymer.plan.CurriculumPlan` (``k' = ceil(h k)`` supports).
Training (stage 2, ``stage_loss``), per query sample x::

    L = L_cls(x) + lambda_sup * (1/k') sum_{j in S(x)} l(ŷ_j, y_j) + lambda_rec * L_rec(x)

with two exact forms of ``L_sup`` under a fixed condition (spec §6): ``explicit`` (forward the
supports' dialogues with x's missing pattern) and ``weights`` (each training sample j carries
``1 + lambda_sup w_j``, ``w_j = sum_{x: j in S(x)} 1/k'_x``; no extra forward). ``sup_form=auto``
uses weights; under ``random:p`` that is an approximation (a support is scored under its own
epoch mask, not its query's; measured against explicit in docs/hardymer.md).
Test time: one forward pass, no teacher, no retrieval.

The model is MoMKE plus decoders (for ``L_rec``); stage 1 is MoMKE's unimodal stage.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...data.dataset import Batch, MERDataset, collate
from ...training.method import Ablation, Stage, per_utterance_loss, task_loss
from ...retrieval import support_weights
from ..decoder import ModalityDecoders, reconstruction_error
from ..momke import MoMKE, MoMKEConfig
from ..registry import register_method
from .context import prepare_context
from .plan import VARIANTS, first_plan, neighbour_targets
from .predict import HardyPredictExtras, export_fold_files
from .reference import ReferenceDecoder, condition_missing
from .reference import rec_loss as reference_rec_loss

# What --reference-compat (model.reference_compat=true) sets: the reference code's computation
# (spec §4, notes/reference-mechanism.md, models/hardymer/reference.py). Applied over the
# presets and under the user's --set, so any one of them can be changed back.
REFERENCE_CHOICES = {
    # hardness and retrieval (train_our.py)
    "hardness_fusion": "sigmoid", "hardness_scope": "batch", "k_rule": "floor+1",
    "ranking": "merge-order", "support_labels": "query", "sup_form": "views",
    "view_steps": "view",
    # teacher (models.EasyReconstructModel, train_teacher.py): one per condition, raw features
    "teacher_kind": "reference", "teacher_mask": "condition", "teacher_features": "raw",
    "rec_target": "masked", "attn_slip": True, "row_bug": True,
    # student (models.OurModel): each modality through its own expert, one decoder, text L2
    "mixing": False, "decoder": "reference", "text_l2": True,
    # fine-tuning (models.FineTuning, train_fine_tuning.py: lr 1e-4, batch 16, sessions 1-4)
    "finetune_net": "reference", "finetune_scope": "official-split", "finetune_lr": 1e-4,
    "finetune_batch": 16,
}


# The paper's ablations (§2) as one-word names; each is one config switch, and each has a row
# in the paper's ablation table (``published``: the row's name after the method's).
ABLATIONS = {
    "no-h-dir": Ablation(("model.use_h_dir=false",), "w/o h_dir"),
    "no-h-ind": Ablation(("model.use_h_ind=false",), "w/o h_ind"),
    "no-h": Ablation(("model.use_hardness=false",), "w/o h"),
    "no-retrieval": Ablation(("model.retrieval=false",), "w/o retrieval features"),
    "no-finetune": Ablation(("model.finetune=false",), "w/o fine-tuning features"),
    # Not an ablation: the reference code's computation, compared with the paper's own row.
    "reference": Ablation(("model.reference_compat=true",), ""),
    # Curriculum variants: ours, not the paper's (docs/hardymer.md), no published row.
    "mass": Ablation(("model.curriculum=mass",)),
    "focus": Ablation(("model.curriculum=focus",)),
    "pace": Ablation(("model.curriculum=pace",)),
    "views": Ablation(("model.sup_form=views", "model.view_steps=batch",
                       "model.support_labels=query", "model.ranking=merge-order")),
    "complete": Ablation(("model.curriculum=complete",)),
}


@dataclass
class HardyConfig(MoMKEConfig):
    """HARDY-MER hyper-parameters; defaults are the paper's (IEMOCAP, k = 3).

    Ablations (paper §2): ``use_h_dir=false`` (w/o h_dir), ``use_h_ind=false`` (w/o h_ind),
    ``use_hardness=false`` (w/o h: fixed k' = k), ``retrieval=false`` (w/o retrieval: no
    L_sup), ``finetune=false`` (w/o fine-tuning features).
    """

    k: int = 3
    lambda_sup: float = 1.0
    lambda_rec: float = 1.0
    rec_norm: str = "mse"              # "mse" (per-dim squared error) or "l2" (literal norm)
    sup_form: str = "auto"             # "auto", "weights", "explicit" or "views" (reference:
                                       # k+1 neighbour views under x's mask with x's label)
    view_steps: str = "batch"          # views: one step per batch, or "view" (reference: one
                                       # optimizer step per view, gradients accumulated)
    decoder: str = "per-modality"      # "reference": one Linear-ReLU-Linear, 1024 wide
    text_l2: bool = False              # reference: text features L2-normalised at input
    # curriculum variants (ours, not the paper's; docs/hardymer.md "Curriculum variants")
    curriculum: str = "paper"          # "mass", "focus", "pace", "complete"
    focus_gamma: float = 8.0           # focus: own loss x (1 + gamma h); the best mean
                                       # validation WA of 0.5, 1, 2, 4, 8 (docs/results.md)
    pace_eta: float = 0.5              # pace: easy/hard weights 1 +- eta, annealed linearly
    # ablations
    use_h_dir: bool = True
    use_h_ind: bool = True
    use_hardness: bool = True
    retrieval: bool = True
    finetune: bool = True
    # hardness and retrieval choices (paper defaults; reference alternatives in comments)
    hardness_fusion: str = "sum"       # "sigmoid": σ(β(α1 h_dir + α2 h_ind))
    hardness_norm: str = "minmax"      # "minmax" or "rank" over the training set
    hardness_scope: str = "train"      # "batch": min-max per training batch (reference)
    sigmoid_beta: float = 4.0
    alpha_dir: float = 0.6
    alpha_ind: float = 0.4
    k_rule: str = "ceil"               # "floor+1" (reference)
    ranking: str = "combined"          # "merge-order" (reference: a, v, t lists, distance unused)
    support_labels: str = "own"        # "query" (reference: supports trained on x's label)
    reference_compat: bool = False     # all reference choices above at once
    plan_scope: str = "fold"           # "step": teacher + FAISS inside every step (reference
                                       # cost profile; for benchmarks)
    index: str = "flat"                # "ivf", "ivfpq", "hnsw" or "auto" (exact up to 10^5
                                       # vectors, IVF-PQ above) for large databases
    row_bug: bool = False              # reference: masks/hardness on transposed rows
    # teacher
    teacher_kind: str = "ours"         # "reference": EasyReconstructModel, entropy MI
    rec_target: str = "true"           # reference teacher: "masked" (zeros, the reference's)
    attn_slip: bool = False            # reference teacher: cross-attention dropout p = 1.0
    teacher_epochs: list[int] = field(default_factory=lambda: [100, 100])
    teacher_seed: int = 334
    teacher_mask: str = "random"       # "condition": one teacher per (fold, condition)
    temperature: float = 0.1
    ind_estimator: str = "label-pmi"   # "infonce": instance-level InfoNCE critic
    dir_error: str = "mse"             # "whitened": Mahalanobis residual per dimension
    teacher_features: str = "raw"      # "finetuned": the teacher reads fine-tuned features
    lambda_nce: float = 1.0
    # feature fine-tuning
    finetune_epochs: int = 20
    finetune_lr: float = 1e-3
    finetune_seed: int = 152
    finetune_batch: int = 64           # utterances per step (reference: 16)
    finetune_output: str = "finetuned"  # "concat": [raw, fine-tuned] features (2d)
    finetune_net: str = "ours"         # "reference": FineTuning MLP, fc2 pre-activation
                                       # feature, double softmax, last epoch kept
    finetune_scope: str = "fold"       # "official-split": trained once on the data's official
                                       # training split (IEMOCAP sessions 1-4) for every fold —
                                       # the reference's; test labels of other folds leak

    @classmethod
    def reference(cls, **changes) -> "HardyConfig":
        """The reference code's computation (what ``--reference-compat`` resolves to), with
        ``changes`` over it; config loading does the same from the flag."""
        return cls(**{"reference_compat": True, **REFERENCE_CHOICES, **changes})

    @property
    def needs_teacher(self) -> bool:
        return self.retrieval and self.use_hardness and (self.use_h_dir or self.use_h_ind)


_CHOICES = {"rec_norm": ("mse", "l2"), "sup_form": ("auto", "weights", "explicit", "views"),
            "hardness_fusion": ("sum", "sigmoid"), "hardness_norm": ("minmax", "rank"),
            "hardness_scope": ("train", "batch"), "k_rule": ("ceil", "floor+1"),
            "ranking": ("combined", "merge-order"), "support_labels": ("own", "query"),
            "plan_scope": ("fold", "step"), "index": ("flat", "ivf", "ivfpq", "hnsw", "auto"),
            "teacher_mask": ("random", "condition"),
            "ind_estimator": ("label-pmi", "infonce"), "teacher_features": ("raw", "finetuned"),
            "dir_error": ("mse", "whitened"), "view_steps": ("batch", "view"),
            "decoder": ("per-modality", "reference"), "teacher_kind": ("ours", "reference"),
            "rec_target": ("true", "masked"), "finetune_net": ("ours", "reference"),
            "finetune_scope": ("fold", "official-split"),
            "finetune_output": ("finetuned", "concat"), "curriculum": VARIANTS}


def check_config(cfg: HardyConfig) -> None:
    MoMKE.check_config(cfg)
    for name, allowed in _CHOICES.items():
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"model.{name}={getattr(cfg, name)!r}; expected one of {allowed}")
    if cfg.k < 1:
        raise ValueError(f"model.k={cfg.k}; expected an integer >= 1")
    if cfg.curriculum != "paper" and (cfg.sup_form == "views" or cfg.plan_scope == "step"
                                      or cfg.hardness_scope == "batch"):
        raise ValueError(f"model.curriculum={cfg.curriculum} weighs queries by their plan's "
                         "hardness; it cannot be combined with sup_form=views, "
                         "plan_scope=step or hardness_scope=batch (the reference's forms)")
    if cfg.sup_form == "views" and cfg.ranking != "merge-order":
        raise ValueError(f"model.ranking={cfg.ranking} with model.sup_form=views: the views "
                         "are the reference's merge-order lists (a, v, t, then hardness cuts "
                         "them); set model.ranking=merge-order, or use sup_form=explicit for "
                         "the combined ranking")
    if not 0.0 <= cfg.pace_eta < 1.0:
        raise ValueError(f"model.pace_eta={cfg.pace_eta}; expected 0 <= eta < 1 (weights "
                         "1 +- eta stay positive)")
    if cfg.focus_gamma < 0:
        raise ValueError(f"model.focus_gamma={cfg.focus_gamma}; expected >= 0")


@register_method("hardymer")
class HardyMER(MoMKE):
    """HARDY-MER on a MoMKE backbone with decoders. See the module docstring."""

    Config = HardyConfig
    stage_names = ("unimodal", "mixing")
    ablations = ABLATIONS
    switches = {"reference-compat": "model.reference_compat=true"}
    flag_presets = {"reference_compat": REFERENCE_CHOICES}
    records_hardness = True
    budget_fields = ("teacher_epochs", "finetune_epochs")
    # Cross-fitted fine-tuning (finetune_crossfit=K) gave training and test rows features
    # from different networks, i.e. no one aligned map; removed (docs/hardymer.md).
    retired_fields = {"finetune_crossfit": 0}

    @classmethod
    def check_config(cls, config) -> None:
        check_config(config)

    @classmethod
    def record_fields(cls, config) -> dict:
        """Whose labels shaped the features: ``fold`` (the fold's training split),
        ``official-split`` (the reference's leak) or ``none`` (raw features)."""
        return {"finetune_scope": config.finetune_scope if config.finetune else "none"}

    @classmethod
    def preparation(cls, config, modalities) -> list[tuple[str, int]]:
        cfg = config
        stages = [(f"fine-tuning {m}", cfg.finetune_epochs) for m in modalities] \
            if cfg.finetune else []
        if cfg.needs_teacher:
            per = " (per condition)" if cfg.teacher_mask == "condition" else ""
            stages += [(f"teacher {n}{per}", e) for n, e in
                       zip(("unimodal", "mixing"), cfg.teacher_epochs)]
        return stages

    def __init__(self, config: HardyConfig, dims, n_outputs, task):
        check_config(config)
        super().__init__(config, dims, n_outputs, task)
        self.cfg = config
        D, M = config.hidden, len(self.modalities)
        self.decoders = (ReferenceDecoder(M * D, dims) if config.decoder == "reference"
                         else ModalityDecoders(M * D, D, dims))
        self.ctx = None
        self._plan = None

    # --- per-fold preparation -----------------------------------------------------------------
    @classmethod
    def prepare_fold(cls, config, dataset, fold, train_config, workdir, progress=True):
        check_config(config)
        return prepare_context(config, dataset, fold, train_config, workdir,
                               progress)

    @classmethod
    def test_time_dataset(cls, config, dataset, workdir):
        """The fold's fine-tuned features, read from the run's cache (no retraining)."""
        if not config.finetune:
            return dataset
        folder = Path(workdir) / "finetune"
        if not (folder / "finetune.json").is_file():
            raise FileNotFoundError(f"{folder}/finetune.json missing: this fold's fine-tuned "
                                    "features were not written (re-run the train command)")
        feats = {m: np.load(folder / f"{m}.npy", mmap_mode="r") for m in dataset.modalities}
        return replace(dataset, features=feats)

    @classmethod
    def hardness_plan(cls, cell: Path):
        """The curriculum plan of the cell's first conditioned epoch (None if not stored)."""
        return first_plan(cell)

    @classmethod
    def plan_weights(cls, config, train_config, plan):
        """Each epoch's ``help`` (all the weight a query's term hands out) and ``loss_weight``
        (what each sample's own loss ends up with) under the curriculum variant; under a
        random condition from the first epoch's plan (later epochs draw other masks)."""
        if not config.retrieval or plan is None or config.sup_form == "views":
            return None     # views: k + 1 views per query, not a reweighting of samples
        stage = Stage("mixing", int(list(train_config.epochs)[-1]))
        out = {}
        for e in range(1, stage.epochs + 1):
            cw = plan.curriculum(config.curriculum, stage.progress(e), config.focus_gamma,
                                 config.pace_eta)
            out[e] = {"help": cw.help(plan, config.lambda_sup),
                      "loss_weight": cw.loss_weight(plan, config.lambda_sup)}
        return out

    @classmethod
    def predict_extras(cls, config, *, fold_dir, dataset, inputs, reference, train_ids,
                       device) -> HardyPredictExtras:
        """Fine-tuned features of new utterances, their own h_ind, the neighbours' h."""
        return HardyPredictExtras(config, fold_dir, dataset, inputs, reference, train_ids,
                                  device)

    @classmethod
    def export_fold(cls, config, *, fold_dir, out_fold_dir, cells, rows) -> None:
        """The fine-tuning networks and the exported rows' fine-tuned features, the teacher's
        weights and each cell's first curriculum plan (ids renumbered)."""
        export_fold_files(config, Path(fold_dir), Path(out_fold_dir), cells, rows)

    def attach(self, context, data, workdir) -> None:
        self.ctx = context
        self.workdir = Path(workdir) if workdir is not None else None
        if context is not None:
            context.attach_cell(data, self.workdir)

    def on_epoch_start(self, epoch: int, stage: Stage, data) -> None:
        if stage.name != "mixing" or self.ctx is None or not self.cfg.retrieval:
            self._plan = None
            return
        self._mask = data.train_mask(epoch)
        if self.cfg.plan_scope == "step":
            self._plan = None
            return
        self._plan = self.ctx.plan(self._mask, epoch, self.workdir)
        n = self.ctx.dataset.n_utterances
        self._rows = self._plan.row_of(n)                     # (n,) plan row of each id
        cfg = self.cfg
        cw = self._plan.curriculum(cfg.curriculum, stage.progress(epoch), cfg.focus_gamma,
                                   cfg.pace_eta)
        self._pair = cw.pair                                  # (Q,) per support of x
        own = np.zeros(n)
        own[self._plan.ids] = cw.own
        self._own = torch.from_numpy(own).float()             # (n,) weight of x's own loss
        # w_j = sum_{x: j in S(x)} pair_x (paper: 1/k'_x, spec §6)
        self._weights = torch.from_numpy(support_weights(self._plan.supports, n,
                                                         cw.pair)).float()
        if cfg.curriculum == "complete":
            feats = {m: self.ctx.dataset.features[m] for m in self.modalities}
            t, cw_ = neighbour_targets(self._plan, feats, n, cfg.k)
            self._targets = {m: torch.from_numpy(v) for m, v in t.items()}
            self._target_weight = torch.from_numpy(cw_).float()

    # --- forward ------------------------------------------------------------------------------
    def inputs(self, batch: Batch) -> Batch:
        """The batch as the model reads it: with ``text_l2`` the text modality ``t`` is
        L2-normalised (the reference does it at every step, test time included)."""
        if not self.cfg.text_l2 or "t" not in batch.x:
            return batch
        return replace(batch, x={**batch.x, "t": F.normalize(batch.x["t"], dim=-1)})

    def forward(self, batch: Batch) -> torch.Tensor:
        return super().forward(self.inputs(batch))

    def unimodal_logits(self, batch: Batch) -> dict[str, torch.Tensor]:
        return super().unimodal_logits(self.inputs(batch))

    def forward_all(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits and reconstructions of a batch already through :meth:`inputs`."""
        fused = self.fused(self.mixed_representations(batch))
        return self.head(fused), self.decoders(fused)

    def stage_steps(self, batch: Batch, stage: Stage):
        """One step per batch, or with ``sup_form=views`` the reference's k + 1 views: each a
        loss ``L_task(view, query labels) + lambda_rec L_rec(view)``, one optimizer step per
        view (``view_steps=view``, gradients accumulated across the batch's views) or their
        sum in one step (``view_steps=batch``)."""
        if stage.name != "mixing" or self.ctx is None or not self.cfg.retrieval or \
                self._form() != "views":
            yield lambda: self.stage_loss(batch, stage)
            return
        plan_h = None
        if self.cfg.teacher_kind != "reference" and self._plan is not None:
            rows = self._rows[batch.index.clamp(min=0).cpu().numpy()]
            plan_h = np.where(batch.utt_mask.cpu().numpy() & (rows >= 0),
                              self._plan.h[np.maximum(rows, 0)], 0.0)
        views = self.ctx.view_batches(batch, self.cfg, plan_h)
        if self.cfg.view_steps == "view":
            for view in views:
                yield lambda view=view: self._view_loss(view)
            return
        yield lambda: self._summed_views(views)

    def _summed_views(self, views):
        losses = [self._view_loss(v) for v in views]
        return sum(l for l, _ in losses), {k: sum(p[k] for _, p in losses) / len(losses)
                                           for k in losses[0][1]}

    def _view_loss(self, view: Batch):
        view = self.inputs(view)
        logits, recon = self.forward_all(view)
        cls = task_loss(logits, view, self.task)
        missing = condition_missing(view.available, logits.dtype)
        rec = reference_rec_loss(recon, view.x, missing, view.utt_mask, self.cfg.row_bug)
        loss = cls + self.cfg.lambda_rec * rec
        return loss, {"task": float(cls.detach()), "rec": float(rec.detach())}

    def stage_loss(self, batch: Batch, stage: Stage):
        if stage.name != "mixing":
            return super().stage_loss(batch, stage)
        cfg = self.cfg
        batch = self.inputs(batch)
        logits, recon = self.forward_all(batch)
        valid = batch.utt_mask
        n = valid.sum().clamp(min=1)
        per = per_utterance_loss(logits.flatten(0, 1), batch.labels.flatten(), self.task)
        per = per.view_as(valid) * valid
        cls = per.sum() / n                  # the plain task loss, reported as "task"
        own = per                            # the paper's weight is 1: left out, bit for bit
        if self._plan is not None and cfg.curriculum != "paper":
            own = per * self._own.to(per.device)[batch.index.clamp(min=0)]
        missing = (batch.present & ~batch.available & valid[..., None]).float()
        rec = reconstruction_error(recon, batch.x, missing, cfg.rec_norm).sum() / n
        if self._plan is not None and cfg.curriculum == "complete":
            # The supports' consensus on what x misses, as a second target (weight k'/k).
            idx = batch.index.clamp(min=0)
            target = {m: t.to(per.device)[idx] for m, t in self._targets.items()}
            cw = self._target_weight.to(per.device)[idx] * valid
            rec = rec + (reconstruction_error(recon, target, missing, cfg.rec_norm) * cw).sum() / n
        sup = torch.zeros((), device=logits.device)
        if self.ctx is not None and cfg.retrieval and cfg.lambda_sup:
            form = self._form()
            if form == "weights":
                w = self._weights.to(per.device)[batch.index.clamp(min=0)]
                sup = (per * w).sum() / n
            else:
                sup = self._explicit_support_loss(batch) / n
        loss = own.sum() / n + cfg.lambda_sup * sup + cfg.lambda_rec * rec
        return loss, {"task": float(cls.detach()), "sup": float(sup.detach()),
                      "rec": float(rec.detach())}

    def _form(self) -> str:
        cfg = self.cfg
        if cfg.sup_form == "views":
            return "views"
        if (cfg.sup_form == "explicit" or cfg.support_labels == "query"
                or cfg.hardness_scope == "batch" or cfg.plan_scope == "step"):
            return "explicit"
        return "weights"   # auto: under random:p a documented approximation (docs/hardymer.md)

    # --- explicit supports --------------------------------------------------------------------
    def _batch_supports(self, batch: Batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Query ids (U,), their k' (U,) and ranked candidates (U, k) for the batch."""
        qids = batch.index[batch.utt_mask].cpu().numpy()
        if self.cfg.plan_scope == "step":
            return self.ctx.step_supports(batch, self.cfg)
        rows = self._rows[qids]
        if (rows < 0).any():
            raise RuntimeError("a training utterance has no curriculum plan row")
        plan = self._plan
        kp = plan.k_prime[rows]
        if self.cfg.hardness_scope == "batch":
            kp = self.ctx.batch_k_prime(plan.h_dir_raw[rows], plan.h_ind_raw[rows], self.cfg)
            kp = np.minimum(kp, (plan.support_ids[rows] >= 0).sum(1))
        return qids, kp, plan.support_ids[rows]

    def _explicit_support_loss(self, batch: Batch) -> torch.Tensor:
        """``sum_x (1/k'_x) sum_{j in S(x)} l(ŷ_j, y)`` with supports in their own dialogues.

        Each support is presented under its query's pattern; supports sharing a dialogue and a
        pattern share one forward pass. ``y`` is the support's own label (paper) or the
        query's (``support_labels="query"``, reference).
        """
        qids, kp, cand = self._batch_supports(batch)
        if kp.sum() == 0:
            return torch.zeros((), device=batch.labels.device)
        ds: MERDataset = self.ctx.dataset
        M = len(self.modalities)
        q_avail = batch.available[batch.utt_mask].cpu().numpy()           # (U, M)
        q_code = q_avail.astype(np.int64) @ (1 << np.arange(M))
        keep = np.arange(cand.shape[1])[None, :] < kp[:, None]
        qi, _ = np.nonzero(keep)
        sup = cand[keep]                                                   # (P,) pairs
        # 1/k'_x (paper), or the curriculum variant's weight of each of x's supports
        weight = self._pair[self._rows[qids[qi]]] if self.cfg.curriculum != "paper" \
            else 1.0 / kp[qi]
        code = q_code[qi]
        labels = ds.labels[sup] if self.cfg.support_labels == "own" else ds.labels[qids[qi]]
        seq = self.ctx.seq_of[sup]
        groups, g_of_pair = np.unique(np.stack([seq, code], 1), axis=0, return_inverse=True)
        g_of_pair = g_of_pair.reshape(-1)
        rows = [ds.sequences[s] for s in groups[:, 0]]
        sb = collate(ds, rows, self._mask, ds.speaker_codes)
        pos = self.ctx.pos_of[sup]
        avail = sb.available.clone()
        bits = torch.from_numpy(((groups[:, 1, None] >> np.arange(M)) & 1).astype(bool))
        avail[torch.from_numpy(g_of_pair), torch.from_numpy(pos)] = bits[g_of_pair]
        sb = sb.with_available(avail).to(batch.labels.device)
        logits = self(sb)[torch.from_numpy(g_of_pair).to(sb.labels.device),
                          torch.from_numpy(pos).to(sb.labels.device)]     # (P, C)
        y = torch.from_numpy(labels).to(logits.device)
        per = per_utterance_loss(logits, y, self.task)
        return (per * torch.from_numpy(weight).to(per)).sum()
