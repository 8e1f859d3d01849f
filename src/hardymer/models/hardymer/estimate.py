"""Two-view hardness of training samples under a condition (HARDY-MER spec §1.3).

* ``h_dir`` (direct): the frozen teacher's reconstruction error of the *missing* modalities
  against their **true** values, mean squared error per dimension, averaged over the missing
  modalities (0 when nothing is missing).
* ``h_ind`` (indirect): minus the mean pointwise mutual information of the sample's modality
  pairs, estimated by the teacher's InfoNCE critic. Available modalities enter with their own
  features, missing ones with the teacher's reconstructions, so ``h_ind`` is defined under
  every condition. For a pair (m, n) and the training set R as the reference distribution::

      pmi(x; m, n) = s(z_m(x), z_n(x)) - log mean_{r in R} exp s(z_m(x), z_n(r))

  (symmetrised over the two directions), with ``s = z·z'/tau`` the critic's score. Modalities
  that disagree (one expresses another emotion) get a low pmi, so a high ``h_ind``.
* ``h = map01(norm(h_dir) + norm(h_ind))``: each term min-max normalised over the training
  set (never per batch), their sum mapped to [0, 1] by min-max or rank.

All functions are vectorised over samples and run without gradients.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch
from scipy.stats import rankdata
from torch.utils.data import DataLoader, SequentialSampler

from ...data.dataset import MERDataset, SequenceDataset
from ..decoder import reconstruction_error
from .teacher import Teacher


@dataclass
class HardnessTerms:
    """Raw hardness terms of Q samples (global ids ``ids``), in sequence order."""

    ids: np.ndarray         # (Q,) int64
    h_dir: np.ndarray       # (Q,) float64, >= 0
    h_ind: np.ndarray       # (Q,) float64


@torch.no_grad()
def reference_embeddings(teacher: Teacher, features: dict[str, np.ndarray], rows: np.ndarray,
                         device: torch.device) -> dict[str, torch.Tensor] | None:
    """What ``h_ind`` is taken against: the InfoNCE critic's embeddings of the reference rows;
    None for the label-pmi estimator, which needs only the label prior."""
    if teacher.config.ind_estimator != "infonce":
        return None
    return critic_embeddings(teacher, features, rows, device)


@torch.no_grad()
def critic_embeddings(teacher: Teacher, features: dict[str, np.ndarray], rows: np.ndarray,
                      device: torch.device, chunk: int = 4096) -> dict[str, torch.Tensor]:
    """Critic embeddings {m: (R, K)} of the true features of ``rows``."""
    teacher.eval()
    out = {}
    for m in teacher.modalities:
        parts = [teacher.critic(m, torch.from_numpy(np.asarray(features[m][rows[a:a + chunk]],
                                                               np.float32)).to(device))
                 for a in range(0, len(rows), chunk)]
        out[m] = torch.cat(parts)
    return out


def _log_mean_exp_scores(z: torch.Tensor, ref: torch.Tensor, tau: float,
                         chunk: int = 2048) -> torch.Tensor:
    """log mean_r exp(z · ref_r / tau) for each row of z (Q,), in chunks of queries."""
    out = [torch.logsumexp(z[a:a + chunk] @ ref.T / tau, dim=1) for a in range(0, len(z), chunk)]
    return torch.cat(out) - np.log(ref.shape[0])


@torch.no_grad()
def batch_hardness_terms(teacher: Teacher, batch, ref: dict[str, torch.Tensor] | None,
                         residuals: dict[str, list] | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw (h_dir, h_ind) of the real utterances of one batch, and their global ids (U,).

    ``ref`` holds the critic embeddings {m: (R, K)} of the reference (training) samples.
    """
    tau = teacher.config.temperature
    label_pmi = teacher.config.ind_estimator == "label-pmi"
    _, recon = teacher.reconstruct(batch)
    valid = batch.utt_mask
    missing = (batch.present & ~batch.available).float()          # (B, S, M)
    err = reconstruction_error(recon, batch.x, missing, norm="mse")
    h_dir = (err / missing.sum(-1).clamp(min=1))[valid]
    if residuals is not None:  # (U, d_m) residuals x̂ - x, kept for the whitened error
        for m in teacher.modalities:
            residuals[m].append((recon[m] - batch.x[m])[valid].cpu())
    z = {}
    for i, m in enumerate(teacher.modalities):
        x = torch.where(batch.available[..., i, None], batch.x[m], recon[m])
        z[m] = teacher.critic(m, x[valid])
    pmi = []
    for m, n in combinations(teacher.modalities, 2):
        if label_pmi:  # z are log-posteriors: log sum_y p(y|x_m) p(y|x_n) / p(y)
            pmi.append(torch.logsumexp(z[m] + z[n] - teacher.log_prior, dim=-1))
            continue
        pos = (z[m] * z[n]).sum(-1) / tau
        pmi.append(pos - 0.5 * (_log_mean_exp_scores(z[m], ref[n], tau)
                                + _log_mean_exp_scores(z[n], ref[m], tau)))
    return h_dir, -torch.stack(pmi).mean(0), batch.index[valid]


@torch.no_grad()
def hardness_terms(teacher: Teacher, dataset: MERDataset, sequences: np.ndarray,
                   availability: np.ndarray, reference_rows: np.ndarray, device: torch.device,
                   batch_size: int = 32, dir_error: str = "mse") -> HardnessTerms:
    """Raw ``h_dir`` and ``h_ind`` of every utterance of ``sequences`` under ``availability``.

    Parameters
    ----------
    teacher : Teacher (frozen; put in eval mode here)
    dataset : MERDataset with true values of every modality of the training samples
    sequences : (n_seq,) indices into ``dataset.sequences`` (the fold's training part)
    availability : (n_utterances, M) bool, the condition's mask over the whole data set
    reference_rows : (R,) global ids of the complete samples the critic's pmi is taken against
    dir_error : "mse" (spec: mean squared error per dimension) or "whitened" (the residual
        whitened by its covariance over the training set before the mean square; see
        :func:`whitened_error`)
    """
    teacher.eval()
    ref = reference_embeddings(teacher, dataset.features, reference_rows, device)
    ds = SequenceDataset(dataset, sequences, availability)
    # Own generator: creating a loader iterator draws a seed, which must not come from the
    # global RNG (a resumed run reads the plan from disk and must see the same RNG stream).
    loader = DataLoader(ds, batch_size=batch_size, sampler=SequentialSampler(ds),
                        collate_fn=ds.collate, generator=torch.Generator())
    res = {m: [] for m in teacher.modalities} if dir_error == "whitened" else None
    parts = [batch_hardness_terms(teacher, b.to(device), ref, res) for b in loader]
    cat = lambda i: torch.cat([p[i] for p in parts]).cpu().numpy()  # noqa: E731
    ids = cat(2).astype(np.int64)
    h_dir = cat(0).astype(np.float64)
    if res is not None:
        missing = dataset.available[ids] & ~availability[ids]          # (Q, M)
        h_dir = whitened_error({m: torch.cat(v).double().numpy() for m, v in res.items()},
                               missing, teacher.modalities)
    return HardnessTerms(ids, h_dir, cat(1).astype(np.float64))


def whitened_error(residuals: dict[str, np.ndarray], missing: np.ndarray,
                   modalities: tuple[str, ...], floor: float = 1e-3) -> np.ndarray:
    """Mean over missing modalities of the whitened squared residual per dimension.

    For each modality m, the residuals ``r = x̂_m - x_m`` (Q, d) of the samples where m is
    missing are centred and expressed in the eigenbasis of their covariance C over those
    samples; ``err_m = mean_i (u_i · (r - mean))² / lambda_i`` (eigenvalues floored at
    ``floor * max``). Directions that no sample reconstructs well (noise, ambiguous
    expression) count less than directions that are well reconstructed except for a few
    samples: the squared Mahalanobis distance of the residual, per dimension.
    """
    q, n_mod = missing.shape
    total, count = np.zeros(q), missing.sum(1)
    for i, m in enumerate(modalities):
        rows = np.flatnonzero(missing[:, i])
        if len(rows) < 2:
            continue
        r = residuals[m][rows]
        r = r - r.mean(0)
        lam, u = np.linalg.eigh(r.T @ r / (len(rows) - 1))
        lam = np.maximum(lam, floor * lam.max())
        total[rows] += ((r @ u) ** 2 / lam).mean(1)
    return total / np.maximum(count, 1)


def normalise01(x: np.ndarray, how: str = "minmax") -> np.ndarray:
    """Map values to [0, 1] over the given set: ``minmax`` or ``rank`` (average ranks).

    A constant vector maps to zeros (no sample is harder than another).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0 or np.ptp(x) <= 1e-12:
        return np.zeros_like(x)
    if how == "minmax":
        return (x - x.min()) / np.ptp(x)
    if how == "rank":
        return (rankdata(x) - 1) / (x.size - 1)
    raise ValueError(f"unknown normalisation {how!r}; expected 'minmax' or 'rank'")


def combine_hardness(h_dir: np.ndarray, h_ind: np.ndarray, *, use_dir: bool = True,
                     use_ind: bool = True, fusion: str = "sum", norm: str = "minmax",
                     beta: float = 4.0, alpha_dir: float = 0.6, alpha_ind: float = 0.4
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised terms and the combined hardness ``h`` in [0, 1] of a set of samples.

    ``fusion="sum"`` (paper): ``h = map01(norm(h_dir) + norm(h_ind))`` with ``map01`` the same
    normalisation ``norm``. ``fusion="sigmoid"`` (reference code):
    ``h = sigmoid(beta (alpha_dir minmax(h_dir) + alpha_ind minmax(h_ind)))``, in [0.5, 0.98]
    for the defaults. A term switched off (ablation) contributes zeros.

    Returns
    -------
    (h_dir_n, h_ind_n, h), each (Q,) float64
    """
    how = "minmax" if fusion == "sigmoid" else norm
    d = normalise01(h_dir, how) if use_dir else np.zeros(len(h_dir))
    i = normalise01(h_ind, how) if use_ind else np.zeros(len(h_ind))
    if fusion == "sum":
        h = normalise01(d + i, norm)
    elif fusion == "sigmoid":
        h = 1.0 / (1.0 + np.exp(-beta * (alpha_dir * d + alpha_ind * i)))
    else:
        raise ValueError(f"unknown hardness fusion {fusion!r}; expected 'sum' or 'sigmoid'")
    return d, i, h
