"""Score-based diffusion pieces shared by the diffusion methods (a layer module; no method).

The variance-exploding SDE of Song et al. (ICLR 2021) in the form IMDer uses (``mdswyz/IMDer``
``imder.py`` l.28-51, ``scoremodel.py`` l.223-291): ``dx = sigma^t dw`` for t in [0, 1], so

* marginal std ``std(t) = sqrt((sigma^(2t) - 1) / (2 ln sigma))`` of ``p_0t(x_t | x_0) =
  N(x_0, std(t)^2 I)`` (:func:`marginal_std`);
* diffusion coefficient ``g(t) = sigma^t`` (:func:`diffusion_coeff`);
* denoising score matching: ``t ~ U(eps, 1)``, ``z ~ N(0, I)``, ``x_t = x_0 + std(t) z``,
  loss = ``||s(x_t, t) std(t) + z||^2`` summed over the feature dimension, mean over the rows
  that count (:func:`sample_times`, :func:`perturb`, :func:`dsm_error`, :func:`dsm_loss`);
* the reverse-time Euler–Maruyama sampler from t = 1 (``x ~ N(0, std(1)^2 I)``) to ``eps`` on
  ``steps`` linearly spaced times: ``mean = x + g^2 s dt``, ``x = mean + sqrt(dt) g z``; the
  last step's mean is the sample (:func:`euler_maruyama`).

Everything is generic over the score network: the sampler takes a callable ``score(x, t)``, and
its state may be one tensor or a dict of tensors (several variables diffused jointly with one
time, e.g. node features and a graph spectrum). Shapes are the caller's: rows first, features
last for the loss helpers.
"""
from __future__ import annotations

import math
from typing import Callable, Union

import torch
from torch import nn

State = Union[torch.Tensor, dict[str, torch.Tensor]]


def marginal_std(t: torch.Tensor, sigma: float) -> torch.Tensor:
    """``sqrt((sigma^(2t) - 1) / (2 ln sigma))``, elementwise; 0 at t = 0."""
    t = torch.as_tensor(t)
    return torch.sqrt((sigma ** (2.0 * t) - 1.0) / (2.0 * math.log(sigma)))


def diffusion_coeff(t: torch.Tensor, sigma: float) -> torch.Tensor:
    """``g(t) = sigma^t``, elementwise."""
    return sigma ** torch.as_tensor(t)


class VESDE:
    """The VE-SDE ``dx = sigma^t dw`` (IMDer: sigma = 25)."""

    def __init__(self, sigma: float):
        if not sigma > 1:
            raise ValueError(f"sigma={sigma!r}; the VE-SDE needs sigma > 1")
        self.sigma = float(sigma)

    def std(self, t: torch.Tensor) -> torch.Tensor:
        return marginal_std(t, self.sigma)

    def g(self, t: torch.Tensor) -> torch.Tensor:
        return diffusion_coeff(t, self.sigma)


class GaussianFourier(nn.Module):
    """Fixed random features of t (Song et al.'s ``GaussianFourierProjection``, IMDer's time
    embedding): ``[sin(2 pi t W), cos(2 pi t W)]``, W ~ N(0, scale^2) (E/2,), a buffer (the
    reference: a parameter with requires_grad=False). (B,) -> (B, E)."""

    def __init__(self, embed_dim: int, scale: float):
        super().__init__()
        self.register_buffer("W", torch.randn(embed_dim // 2) * scale)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        arg = t[:, None] * self.W[None, :] * 2 * math.pi
        return torch.cat([arg.sin(), arg.cos()], dim=-1)


def _map(fn: Callable, *states: State) -> State:
    """Apply ``fn`` leafwise to one tensor or to dicts with the same keys."""
    if isinstance(states[0], dict):
        return {k: fn(*(s[k] for s in states)) for k in states[0]}
    return fn(*states)


def _leaf(state: State) -> torch.Tensor:
    return next(iter(state.values())) if isinstance(state, dict) else state


def sample_times(n: int, eps: float = 1e-5, *, device=None, dtype=torch.float32,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """(n,) diffusion times ``t ~ U(eps, 1)`` (IMDer's ``loss_fn``: eps = 1e-5)."""
    u = torch.rand(n, device=device, dtype=dtype, generator=generator)
    return u * (1.0 - eps) + eps


def perturb(x0: torch.Tensor, std: torch.Tensor, z: torch.Tensor | None = None,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``x_t = x_0 + std z`` with ``z ~ N(0, I)`` (drawn unless given); ``std`` broadcasts to
    ``x0``. Returns ``(x_t, z)``."""
    if z is None:
        z = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
    return x0 + std * z, z


def dsm_error(score: torch.Tensor, z: torch.Tensor, std: torch.Tensor,
              rows: torch.Tensor | None = None) -> torch.Tensor:
    """Denoising score-matching loss of a perturbed batch.

    Parameters
    ----------
    score, z : Tensor (..., D)
        The network's score at ``x_t`` and the noise that made ``x_t``.
    std : Tensor broadcastable to (..., 1)
        ``std(t)`` of each row.
    rows : BoolTensor (...), optional
        Rows that count (default: all).

    Returns
    -------
    Scalar: ``||score std + z||^2`` summed over D, mean over the counted rows (0 when none).
    """
    err = (score * std + z).pow(2).sum(-1)                               # (...)
    if rows is None:
        return err.mean()
    return err.masked_fill(~rows, 0.0).sum() / rows.sum().clamp(min=1)


def dsm_loss(score_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
             x0: torch.Tensor, sde: VESDE, eps: float = 1e-5, rows: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """DSM of one variable with one time per leading row.

    ``x0`` (N, ..., D); ``score_fn(x_t, t, std)`` with t, std (N,) returns the score, shaped
    as ``x0``; ``rows`` (N, ...) bool, the rows that count. See :func:`dsm_error`.
    """
    t = sample_times(x0.shape[0], eps, device=x0.device, dtype=x0.dtype, generator=generator)
    std = sde.std(t)
    std_b = std.view(-1, *([1] * (x0.dim() - 1)))
    xt, z = perturb(x0, std_b, generator=generator)
    return dsm_error(score_fn(xt, t, std), z, std_b, rows)


@torch.no_grad()
def euler_maruyama(score: Callable[[State, torch.Tensor], State], like: State, sde: VESDE,
                   steps: int, eps: float = 1e-3, generator: torch.Generator | None = None,
                   noise: Callable[[], State] | None = None) -> State:
    """Reverse-time Euler–Maruyama sampling of the VE-SDE (IMDer's ``Euler_Maruyama_sampler``).

    Parameters
    ----------
    score : callable ``(x, t) -> s``
        The score at state ``x`` (shaped as ``like``) and time ``t`` (a 0-d tensor).
    like : Tensor or dict of Tensors
        Gives the state's shapes, dtype and device (its values are not read).
    steps : int
        Number of times, linearly spaced from 1 to ``eps`` (>= 2: the step is ``t_0 - t_1``).
    generator : torch.Generator, optional
        Source of the noise (None: the global RNG); ignored when ``noise`` is given.
    noise : callable ``() -> state``, optional
        Draws standard normal noise shaped as ``like`` (e.g. zero at padding, or one generator
        per row so that rows do not depend on each other's noise).

    Returns
    -------
    The last step's mean, shaped as ``like`` (the final noise is not added).
    """
    if steps < 2:
        raise ValueError(f"steps={steps!r}; the sampler needs >= 2 (the step is t_0 - t_1)")
    ref = _leaf(like)
    if noise is None:
        def noise():
            return _map(lambda v: torch.randn(v.shape, generator=generator, device=v.device,
                                              dtype=v.dtype), like)
    times = torch.linspace(1.0, eps, steps, device=ref.device, dtype=ref.dtype)
    dt = times[0] - times[1]
    x = _map(lambda z: z * sde.std(times[0]), noise())
    mean = x
    for t in times:
        g = sde.g(t)
        mean = _map(lambda v, s: v + g ** 2 * s * dt, x, score(x, t))
        x = _map(lambda m, z: m + torch.sqrt(dt) * g * z, mean, noise())
    return mean
