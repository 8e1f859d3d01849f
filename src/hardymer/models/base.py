"""What every method is to the trainer, and the registry that names them (timm-style).

A method = a model + its losses + its stages. The trainer owns the loop, logging, checkpoints
and model selection; a method only says which stages it has, what its loss is in each, and how
it predicts. Adding a method is adding one file with ``@register_method("name")``.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, fields
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
    """

    name: str
    epochs: int
    apply_condition: bool = True
    select: bool = True


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
    internal: ClassVar[bool] = False  # a part of another method (not listed for users)

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

    def configure_optimizer(self, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        """Adam over all parameters (the reference methods' choice)."""
        return torch.optim.Adam(self.parameters(), lr=lr, weight_decay=weight_decay)


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


# --- registry --------------------------------------------------------------------------------

_REGISTRY: dict[str, type[Method]] = {}


def register_method(name: str):
    """Class decorator: ``@register_method("momke")``."""
    def wrap(cls: type[Method]) -> type[Method]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"method name {name!r} is already registered")
        cls.method_name = name
        _REGISTRY[name] = cls
        return cls
    return wrap


def list_methods(pattern: str = "*", include_internal: bool = False) -> list[str]:
    _import_all()
    return sorted(n for n, cls in _REGISTRY.items() if fnmatch.fnmatch(n, pattern)
                  and (include_internal or not cls.internal))


def get_method_class(name: str) -> type[Method]:
    _import_all()
    if name not in _REGISTRY:
        raise KeyError(f"unknown method {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create_method(name: str, dims: dict[str, int], n_outputs: int, task: str,
                  **overrides: Any) -> Method:
    """Build a registered method from its default config with keyword overrides."""
    cls = get_method_class(name)
    known = {f.name for f in fields(cls.Config)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"{name}: unknown config field(s) {unknown}; fields: {sorted(known)}")
    return cls(cls.Config(**overrides), dims, n_outputs, task)


def _import_all() -> None:
    # Importing the package registers every method file (one file per method).
    from .. import models  # noqa: F401
