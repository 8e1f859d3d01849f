"""What every method is to the trainer: the Method/Stage protocol.

A method = a model + its losses + its stages. The trainer owns the loop, logging, checkpoints
and model selection; a method only says which stages it has, what its loss is in each, and how
it predicts. A method also declares its own extras here, as class attributes and hooks
(ablation names, per-fold preparation, what ``predict`` and the reports add), so that nothing
outside its module asks for it by name. The registry that names methods is
:mod:`hardymer.models.registry`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..data.dataset import Batch


@dataclass(frozen=True)
class Stage:
    """One training stage.

    Attributes
    ----------
    name : str
    epochs : int
        0 skips the stage.
    apply_condition : bool
        Whether training batches carry the missing-modality condition in this stage. Stages
        before the first conditioned one depend only on the data and fold, so their result can
        be shared across conditions.
    select : bool
        Whether model selection (validation or the papers' test rule) considers this stage's
        epochs. Methods select in their final stage.
    start : int
        Epochs of the stages before this one (set by the trainer): the stage's epochs are
        ``start + 1 .. start + epochs`` in the trainer's 1-based count.
    """

    name: str
    epochs: int
    apply_condition: bool = True
    select: bool = True
    start: int = 0

    def progress(self, epoch: int) -> float:
        """Where ``epoch`` lies in this stage: 0 at its first epoch, 1 at its last."""
        return 0.0 if self.epochs <= 1 else \
            min(max((epoch - self.start - 1) / (self.epochs - 1), 0.0), 1.0)


class Method(nn.Module):
    """Base class of every registered method.

    Subclasses set ``Config`` (a dataclass of hyper-parameters with paper defaults) and
    implement :meth:`forward`, :meth:`stage_loss` and, for several stages, :meth:`stages`.

    Parameters
    ----------
    config : Config dataclass
    dims : dict of str -> int
        Input dimension per modality, in data-set order.
    n_outputs : int
        Number of classes, or 1 for regression.
    task : {"classification", "regression"}
    """

    Config: ClassVar[type]
    stage_names: ClassVar[tuple[str, ...]] = ("train",)
    method_name: ClassVar[str] = "train"      # set by the registry
    #: One-word variants, ``NAME -> Ablation`` (``hardymer sweep --methods momke:NAME``,
    #: ``hardymer train --ablation NAME``).
    ablations: ClassVar[dict[str, "Ablation"]] = {}
    #: Named switches that are not ablations, ``flag -> override`` (``--reference-compat``).
    switches: ClassVar[dict[str, str]] = {}
    #: Groups of model values a boolean field turns on, ``field -> {key: value}``
    #: (HARDY-MER's ``reference_compat``): applied over the presets and under the user's own
    #: settings, so ``--set`` can change any one of them.
    flag_presets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: The published method row this one is shown beside when its own name differs: a
    #: reconstruction from a paper's abstract (``mran-like`` -> ``mran``); None: its own name.
    published_as: ClassVar[str | None] = None
    #: How the training loss pools a batch's utterances: ``"mean"`` (per-utterance mean) or
    #: ``"sum"`` — a distributed run scales each rank's loss by it (docs/scale.md); terms
    #: over the batch as a whole (contrastive, HSIC, moments) see their rank's share only.
    loss_reduction: ClassVar[str] = "mean"
    #: Whether cells store per-sample hardness that :meth:`hardness_plan` reads back
    #: (``hardymer hardness`` and the report's hardness section).
    records_hardness: ClassVar[bool] = False
    #: Model fields that count iterations of stages the trainer's ``epochs`` do not cover
    #: (HARDY-MER's teacher and fine-tuning epochs); ``--set budget.scale=F`` scales them too.
    budget_fields: ClassVar[tuple[str, ...]] = ()
    #: Model fields that no longer exist, ``name -> the value whose behaviour every run now
    #: has``: a stored run with that value loads without it; another value is an error.
    retired_fields: ClassVar[dict[str, Any]] = {}

    def __init__(self, config, dims: dict[str, int], n_outputs: int, task: str):
        super().__init__()
        self.config, self.dims, self.n_outputs, self.task = config, dict(dims), n_outputs, task
        self.modalities = tuple(dims)

    def stages(self, epochs: list[int]) -> list[Stage]:
        """Stages with their epoch counts; default: one conditioned stage."""
        return [Stage(name, e) for name, e in zip(self.stage_names, epochs)]

    def forward(self, batch: Batch) -> torch.Tensor:
        """Predictions (B, S, n_outputs) from what ``batch.available`` allows."""
        raise NotImplementedError

    def stage_loss(self, batch: Batch, stage: Stage) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar training loss of a batch in a stage, and named parts for the log."""
        loss = task_loss(self(batch), batch, self.task)
        return loss, {"task": float(loss.detach())}

    def stage_steps(self, batch: Batch, stage: Stage):
        """The optimizer steps of one batch, as callables returning ``(loss, parts)``; the
        trainer zeroes the gradients once per batch, then calls each (after the previous
        step), ``backward`` and ``step``, so step j uses the gradients of steps 0..j
        (HARDY-MER's reference form: one step per view). Callables, so that the trainer can
        run each loss inside DistributedDataParallel's forward. Default: one step with
        :meth:`stage_loss`."""
        yield lambda: self.stage_loss(batch, stage)

    # --- checks and schedule, asked before anything is written ------------------------------
    @classmethod
    def check_config(cls, config) -> None:
        """Raise ValueError naming ``model.KEY`` for a value the method cannot run with.

        The default checks what field names promise: ``*dropout`` and ``beta*`` in [0, 1),
        ``*epochs``, ``*steps`` and ``*weight`` non-negative, ``*lr`` and sizes (``hidden``,
        ``depth``, ``heads``, ``*_dim``, ``*_size``, ``n_*``, …) positive. Methods extend it
        with their choices."""
        sizes = ("hidden", "depth", "heads", "_dim", "_size", "_depth", "_hidden", "moments")
        for name, value in vars(config).items():
            values = value if isinstance(value, (list, tuple)) else [value]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                continue
            if (name.endswith("dropout") or name.startswith("beta")) and \
                    not all(0 <= v < 1 for v in values):
                raise ValueError(f"model.{name}={value!r}; expected a value in [0, 1)")
            if name.endswith(("epochs", "steps", "weight")) and not all(v >= 0 for v in values):
                raise ValueError(f"model.{name}={value!r}; expected a value >= 0")
            if (name.endswith(("lr",) + sizes) or name.startswith("n_")) and \
                    not all(v > 0 for v in values):
                raise ValueError(f"model.{name}={value!r}; expected a value > 0")

    @classmethod
    def record_fields(cls, config) -> dict[str, Any]:
        """Facts about how a result was made that every result row records (HARDY-MER:
        ``finetune_scope``); default: none."""
        return {}

    @classmethod
    def preparation(cls, config, modalities) -> list[tuple[str, int]]:
        """Stages trained before the trainer's own, once per fold, as ``(name, epochs)``
        (HARDY-MER: feature fine-tuning of each modality, the teacher's two stages); default:
        none. The schedule ``train`` prints lists them, so a user sees every epoch a command
        costs."""
        return []

    # --- hooks for methods that need more than a loss (HARDY-MER); defaults do nothing -------
    @classmethod
    def prepare_fold(cls, config, dataset, fold, train_config, workdir, progress: bool = True):
        """Per-fold, condition-independent preparation before any model of the fold is built.

        Returns ``None`` (nothing to prepare) or an object with a ``dataset`` attribute (the
        data the fold trains on, e.g. with fine-tuned features) that :meth:`attach` receives.
        ``workdir`` (a folder, or None in memory) is where such work is cached for reuse.
        """
        return None

    @classmethod
    def test_time_dataset(cls, config, dataset, workdir):
        """The data a trained model of this fold reads (default: the data set as it is)."""
        return dataset

    def attach(self, context, data, workdir) -> None:
        """Receive :meth:`prepare_fold`'s result and the cell's :class:`FoldData`."""

    def on_epoch_start(self, epoch: int, stage: Stage, data) -> None:
        """Called by the trainer before each training epoch (after a resume too)."""

    def optimizer_settings(self, stage: Stage) -> dict[str, Any]:
        """Param-group settings the trainer applies at each epoch of ``stage`` (e.g. MMIN's
        Adam β1 differs between its two stages); default: none."""
        return {}

    def configure_optimizer(self, lr: float, weight_decay: float,
                            fused: bool = False) -> torch.optim.Optimizer:
        """Adam over all parameters (the reference methods' choice); ``fused``: torch's
        one-kernel implementation (same update up to float rounding, several times faster)."""
        return torch.optim.Adam(self.parameters(), lr=lr, weight_decay=weight_decay,
                                fused=fused or None)

    # --- extras a run folder can be asked for after training; defaults: none ----------------
    @classmethod
    def hardness_plan(cls, cell: Path):
        """The per-sample hardness a finished cell stored (an object with ``ids``,
        ``available``, ``h_dir``, ``h_ind``, ``h``, their ``*_raw`` forms, ``k_prime`` and
        ``supports``), or None. Only methods with ``records_hardness`` store one."""
        return None

    @classmethod
    def plan_weights(cls, config, train_config, plan) -> dict[int, dict[str, Any]] | None:
        """Per epoch of the conditioned stage (1-based), what the objective gives each row of a
        :meth:`hardness_plan`: ``{"help": (Q,), "loss_weight": (Q,)}``; None when the method
        weighs none (the hardness report shows it so a user can see who gets help)."""
        return None

    @classmethod
    def predict_extras(cls, config, *, fold_dir: Path, dataset, inputs, reference,
                       train_ids, device) -> "PredictExtras":
        """What ``predict`` adds for this method (see :class:`PredictExtras`).

        ``fold_dir`` is the fold's preparation folder (:meth:`prepare_fold`'s ``workdir``),
        ``dataset`` the run's raw data, ``inputs`` what the models read before
        :meth:`test_time_dataset`, ``reference`` what they read after it.
        """
        return PredictExtras()


    @classmethod
    def export_fold(cls, config, *, fold_dir: Path, out_fold_dir: Path,
                    cells: dict[str, tuple[Path, Path]], rows) -> None:
        """Write into a shareable model folder (``hardymer export``) what
        :meth:`test_time_dataset` and :meth:`predict_extras` read from ``fold_dir`` and from
        each cell (``cells``: condition -> (run cell, export cell)), weights only, utterance
        ids renumbered to the exported rows: ``rows`` (sorted, (n,)) are the run's ids of the
        exported training utterances, whose new id i is ``rows[i]``'s. The exporter copies
        every cell's selected weights itself; default: nothing more."""


@dataclass(frozen=True)
class Ablation:
    """A one-word variant of a method: config overrides, and the name of the row the papers
    report for it (``published``, e.g. ``"w/o h_dir"``; ``""`` the method's own row, as for a
    reference-code form; None when they report none)."""

    overrides: tuple[str, ...]
    published: str | None = None


class PredictExtras:
    """What a method adds to a prediction besides its model's output; the default adds
    nothing. ``cell`` is the folder of the (fold, condition) model that answers."""

    def neighbour_data(self, reference):
        """The training data whose rows are searched for a new utterance's neighbours."""
        return reference

    def features(self, features: dict, available) -> dict:
        """New utterances' features (n, d_m) as the models read them (e.g. fine-tuned)."""
        return features

    def neighbour_hardness(self, cell: Path, ids):
        """Hardness (Q, k) of neighbour ids (Q, k) as training scored them, NaN where
        unknown; None when the method records none."""
        return None

    def own_hardness(self, cell: Path, queries, rows):
        """A new utterance's own hardness terms, ``{"h_ind": (len(rows),)}``, or None."""
        return None


def task_loss(pred: torch.Tensor, batch: Batch, task: str,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """Masked CE (classes) or MSE (regression), mean over valid utterances.

    Parameters
    ----------
    pred : Tensor (B, S, C)
    mask : BoolTensor (B, S), optional
        Utterances that count; defaults to ``batch.utt_mask``.
    """
    mask = batch.utt_mask if mask is None else mask
    n = mask.sum().clamp(min=1)
    per = per_utterance_loss(pred.flatten(0, 1), batch.labels.flatten(), task)
    return (per * mask.flatten().to(per.dtype)).sum() / n


def per_utterance_loss(pred: torch.Tensor, labels: torch.Tensor, task: str) -> torch.Tensor:
    """Unreduced CE (classes) or squared error (regression): pred (N, C), labels (N,) -> (N,)."""
    if task == "classification":
        return F.cross_entropy(pred, labels, reduction="none")
    return (pred[..., 0] - labels.float()).pow(2)
