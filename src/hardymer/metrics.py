"""Metrics exactly as the papers' code computes them (``wxxv/MoMKE``, ``zeroQiaoba/GCNet``).

Classification (IEMOCAP), over all non-padding utterances:
  WA = accuracy, UA = macro-averaged recall, F1 = weighted F1.
  (The seed slides swap the names WA/UA; the code and the tables use these.)
Regression (CMU-MOSI/MOSEI): utterances whose label is exactly 0 are dropped for *all four*
metrics (the reference's ``non_zeros``), then
  ACC = accuracy of (label > 0) vs (pred > 0), F1 = weighted F1 of the same,
  MAE = mean |label - pred|, Corr = Pearson correlation.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, recall_score

CLASSIFICATION_METRICS = ("WA", "UA", "F1")
REGRESSION_METRICS = ("ACC", "F1", "MAE", "Corr")
# For model selection: larger is better except for MAE.
LOWER_IS_BETTER = frozenset({"MAE"})


def classification_metrics(labels: np.ndarray, preds: np.ndarray,
                           mask: np.ndarray | None = None) -> dict[str, float]:
    """WA, UA, F1 of predicted class ids.

    Parameters
    ----------
    labels, preds : array of int, any shape (e.g. (B, S))
    mask : array of bool, same shape, optional
        True for real utterances; padding is excluded.
    """
    y, p = _flatten(labels, preds, mask)
    if len(y) == 0:
        raise ValueError("no utterances to evaluate (empty mask)")
    return {"WA": float(accuracy_score(y, p)),
            "UA": float(recall_score(y, p, average="macro", zero_division=0)),
            "F1": float(f1_score(y, p, average="weighted", zero_division=0))}


def regression_metrics(labels: np.ndarray, preds: np.ndarray,
                       mask: np.ndarray | None = None) -> dict[str, float]:
    """ACC, F1 (non-zero labels, sign of prediction), MAE and Corr on non-zero labels."""
    y, p = _flatten(np.asarray(labels, dtype=np.float64), np.asarray(preds, dtype=np.float64),
                    mask)
    keep = y != 0
    y, p = y[keep], p[keep]
    if len(y) == 0:
        raise ValueError("no utterances with a non-zero label to evaluate")
    corr = float(np.corrcoef(y, p)[0, 1]) if len(y) > 1 and p.std() > 0 and y.std() > 0 \
        else float("nan")
    return {"ACC": float(accuracy_score(y > 0, p > 0)),
            "F1": float(f1_score(y > 0, p > 0, average="weighted", zero_division=0)),
            "MAE": float(mean_absolute_error(y, p)),
            "Corr": corr}


def compute_metrics(task: str, labels, preds, mask=None) -> dict[str, float]:
    if task == "classification":
        return classification_metrics(labels, preds, mask)
    return regression_metrics(labels, preds, mask)


def metric_names(task: str) -> tuple[str, ...]:
    return CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS


def default_selection_metric(task: str) -> str:
    """The metric the reference code's best-epoch rule maximises: WA (IEMOCAP), F1 (CMU).

    (``wxxv/MoMKE`` picks CMU epochs by ``argmax(test_fscores)`` while printing "acc".)
    """
    return "WA" if task == "classification" else "F1"


def better(metric: str, new: float, old: float | None) -> bool:
    if old is None or np.isnan(old):
        return not np.isnan(new)
    return new < old if metric in LOWER_IS_BETTER else new > old


def _flatten(labels, preds, mask):
    labels, preds = np.asarray(labels).reshape(-1), np.asarray(preds).reshape(-1)
    if labels.shape != preds.shape:
        raise ValueError(f"labels and predictions differ in size: {labels.shape} vs {preds.shape}")
    if mask is None:
        return labels, preds
    mask = np.asarray(mask, dtype=bool).reshape(-1)
    return labels[mask], preds[mask]
