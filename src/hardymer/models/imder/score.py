"""IMDer's diffusion part: the VE-SDE, the conditional score networks, DSM and the sampler.

Reference: ``mdswyz/IMDer`` ``trains/singleTask/model/scoremodel.py`` (``ScoreNet`` l.32-221,
``loss_fn`` l.223-244, ``Euler_Maruyama_sampler`` l.248-291) and ``imder.py`` l.28-51, 81
(SDE). Shapes: B sequences of L positions (the utterances of a dialogue), D channels (the
projection width, 32), channel-first ``(B, D, L)`` as the reference's Conv1d layout.

* VE-SDE, sigma = 25: ``std(t) = sqrt((sigma^(2t) - 1) / (2 ln sigma))``, ``g(t) = sigma^t``
  (``models/diffusion.py``, shared with ``gsdnet-like``, as are the time draw, the
  perturbation and the sampler's loop).
* ``ScoreUNet``: the reference's 1-D U-Net (channels 32-64-128-256: a stride-1 conv, then
  stride-2 convs down, transposed convs up with skip concatenation), Gaussian-Fourier time
  features (256, scale 30, fixed) through a Linear and swish, added per level by a Linear;
  GroupNorm (4 groups at the first level, 32 elsewhere) and swish; at every level a 2-layer,
  8-head causal MulT transformer cross-attends from the feature map to the condition, itself
  carried through its own (transposed) convs; the output is divided by std(t).
  Ours: the number of levels follows ``channels``; GroupNorm groups are reduced to a divisor
  of the width (gcd) so that small test widths work; every conv input and norm is masked so
  that the padding of a batch never reaches a real position (the positions are the
  utterances: a conv of kernel 3 mixes neighbouring utterances, a stated deviation of the
  port), and L is padded to a multiple of ``2^(levels-1)`` inside.
* ``ScoreMLP``: the spec's cheaper labelled deviation, one MLP per utterance (L = 1).
* ``dsm_loss``: ``t ~ U(eps, 1)`` per sequence, ``z ~ N(0, I)``, ``x_t = x_0 + std z``; the
  condition is perturbed with the *same* ``z`` (reference l.239; ``clean_condition``: not
  perturbed); loss = mean over sequences of ``||s std + z||^2`` summed over the D x L
  entries, here over the entries of the target utterances only.
* ``euler_maruyama``: from t = 1 (``x ~ N(0, std(1)^2)``) to ``eps`` in ``steps`` linearly
  spaced times; each step draws fresh noise for the condition (unless clean), takes
  ``mean = x + g^2 s dt`` and ``x = mean + sqrt(dt) g z``, and the last step's mean is the
  sample; under no_grad. ``generator`` seeds it (deterministic evaluation).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..diffusion import VESDE, GaussianFourier, euler_maruyama as reverse_sde, perturb, sample_times
from .fusion import TransformerEncoder


def zero_pad(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, C, L) with the positions where ``mask`` (B, L) is False set to 0."""
    return x.masked_fill(~mask[:, None, :], 0.0)


def level_masks(mask: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Real positions at each resolution of a stride-2 pyramid: position j of level k is real
    when its centre ``2^k j`` is (for a prefix of n real positions: ``j < ceil(n / 2^k)``)."""
    masks = [mask]
    for _ in range(levels - 1):
        masks.append(F.max_pool1d(masks[-1][:, None].float(), 2, 2)[:, 0] > 0)
    return masks


class MaskedGroupNorm(nn.Module):
    """GroupNorm whose statistics use the real positions only; padding comes out zero."""

    def __init__(self, groups: int, channels: int, eps: float = 1e-5):
        super().__init__()
        self.groups, self.eps = math.gcd(groups, channels), eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, C, L = x.shape
        G = self.groups
        m = mask[:, None, None, :].to(x.dtype)                       # (B, 1, 1, L)
        xg = x.view(B, G, C // G, L)
        n = (m.sum(-1, keepdim=True) * (C // G)).clamp(min=1)        # (B, 1, 1, 1)
        mean = (xg * m).sum((2, 3), keepdim=True) / n
        var = ((xg - mean) * m).pow(2).sum((2, 3), keepdim=True) / n
        y = ((xg - mean) / torch.sqrt(var + self.eps)).view(B, C, L)
        return zero_pad(y * self.weight[:, None] + self.bias[:, None], mask)


class CrossAttention(nn.Module):
    """The reference's per-level ``TransformerEncoder(C, 8 heads, 2 layers, dropout 0,
    attn_mask=True)`` from the feature map (query) to the condition (keys), channel-first."""

    def __init__(self, channels: int, heads: int, layers: int, causal: bool):
        super().__init__()
        self.tf = TransformerEncoder(channels, heads, layers, causal=causal)

    def forward(self, h: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """h, cond (B, C, L), mask (B, L) -> (B, C, L), zero at padding."""
        out = self.tf(h.transpose(1, 2), cond.transpose(1, 2), mask).transpose(1, 2)
        return zero_pad(out, mask)


class ScoreUNet(nn.Module):
    """Conditional score network s(x_t, t | c), the reference's U-Net. See the module docstring.

    ``forward(x, t, cond, mask, std)``: x, cond (B, D, L); t, std (B,); mask (B, L) real
    positions -> score (B, D, L), zero at padding.
    """

    def __init__(self, dim: int, channels: list[int], embed_dim: int, heads: int, layers: int,
                 causal: bool, fourier_scale: float):
        super().__init__()
        if channels[0] != dim:
            raise ValueError(f"the U-Net's first width {channels[0]} must be the projection "
                             f"width {dim} (its first level attends to the condition)")
        K = self.levels = len(channels)
        self.fourier = GaussianFourier(embed_dim, fourier_scale)
        self.embed = nn.Linear(embed_dim, embed_dim)
        conv = lambda i, o, s: nn.Conv1d(i, o, 3, stride=s, padding=1, bias=False)  # noqa: E731
        up = lambda i, o: nn.ConvTranspose1d(i, o, 3, stride=2, padding=1,  # noqa: E731
                                             output_padding=1, bias=False)
        self.down = nn.ModuleList(conv(dim if k == 0 else channels[k - 1], channels[k],
                                       1 if k == 0 else 2) for k in range(K))
        self.down_cond = nn.ModuleList(conv(channels[k - 1], channels[k], 2)
                                       for k in range(1, K))
        self.down_attn = nn.ModuleList(CrossAttention(c, heads, layers, causal)
                                       for c in channels)
        self.down_dense = nn.ModuleList(nn.Linear(embed_dim, c) for c in channels)
        self.down_norm = nn.ModuleList(MaskedGroupNorm(4 if k == 0 else 32, c)
                                       for k, c in enumerate(channels))
        ups = list(range(K - 1, 0, -1))                        # level k -> level k-1
        self.up = nn.ModuleList(up(channels[k] * (1 if k == K - 1 else 2), channels[k - 1])
                                for k in ups)
        self.up_cond = nn.ModuleList(up(channels[k], channels[k - 1]) for k in ups)
        self.up_attn = nn.ModuleList(CrossAttention(channels[k - 1], heads, layers, causal)
                                     for k in ups)
        self.up_dense = nn.ModuleList(nn.Linear(embed_dim, channels[k - 1]) for k in ups)
        self.up_norm = nn.ModuleList(MaskedGroupNorm(32, channels[k - 1]) for k in ups)
        self.out = nn.ConvTranspose1d(2 * channels[0], dim, 3, stride=1, padding=1)
        self.out_cond = nn.ConvTranspose1d(channels[0], dim, 3, stride=1, padding=1)
        self.out_attn = CrossAttention(dim, heads, layers, causal)

    def forward(self, x, t, cond, mask, std):
        S = x.shape[-1]
        unit = 2 ** (self.levels - 1)
        L = -(-S // unit) * unit
        if L != S:
            x, cond = F.pad(x, (0, L - S)), F.pad(cond, (0, L - S))
            mask = F.pad(mask, (0, L - S), value=False)
        masks = level_masks(mask, self.levels)
        emb = F.silu(self.embed(self.fourier(t)))                         # (B, E)
        h, c, skips = zero_pad(x, mask), zero_pad(cond, mask), []
        for k in range(self.levels):
            h = zero_pad(self.down[k](h), masks[k])
            if k:
                c = zero_pad(self.down_cond[k - 1](c), masks[k])
            h = h + self.down_attn[k](h, c, masks[k]) + self.down_dense[k](emb)[..., None]
            h = F.silu(self.down_norm[k](h, masks[k]))                    # zero at padding
            skips.append(h)
        for i, k in enumerate(range(self.levels - 1, 0, -1)):
            inp = h if k == self.levels - 1 else torch.cat([h, skips[k]], 1)
            h = zero_pad(self.up[i](inp), masks[k - 1])
            c = zero_pad(self.up_cond[i](c), masks[k - 1])
            h = h + self.up_attn[i](h, c, masks[k - 1]) + self.up_dense[i](emb)[..., None]
            h = F.silu(self.up_norm[i](h, masks[k - 1]))
        h = zero_pad(self.out(torch.cat([h, skips[0]], 1)), mask)
        c = zero_pad(self.out_cond(c), mask)
        h = h + self.out_attn(h, c, mask)
        return zero_pad(h / std[:, None, None], mask)[..., :S]


class ScoreMLP(nn.Module):
    """Per-utterance score network (ours, the spec's cheaper option): ``[x; c]`` -> ``depth``
    Linear + time-Linear + swish layers -> Linear -> / std. Same call as :class:`ScoreUNet`."""

    def __init__(self, dim: int, hidden: int, depth: int, embed_dim: int, fourier_scale: float):
        super().__init__()
        self.fourier = GaussianFourier(embed_dim, fourier_scale)
        self.embed = nn.Linear(embed_dim, embed_dim)
        self.layers = nn.ModuleList(nn.Linear(2 * dim if i == 0 else hidden, hidden)
                                    for i in range(depth))
        self.dense = nn.ModuleList(nn.Linear(embed_dim, hidden) for _ in range(depth))
        self.out = nn.Linear(hidden, dim)

    def forward(self, x, t, cond, mask, std):
        emb = F.silu(self.embed(self.fourier(t)))                         # (B, E)
        h = torch.cat([x, cond], 1).transpose(1, 2)                       # (B, L, 2D)
        for layer, dense in zip(self.layers, self.dense):
            h = F.silu(layer(h) + dense(emb)[:, None, :])
        return zero_pad(self.out(h).transpose(1, 2) / std[:, None, None], mask)


def dsm_loss(net: nn.Module, sde: VESDE, x0: torch.Tensor, cond: torch.Tensor,
             mask: torch.Tensor, target: torch.Tensor, eps: float = 1e-5,
             clean_condition: bool = False) -> torch.Tensor:
    """Denoising score matching of one modality (reference ``loss_fn``).

    Parameters
    ----------
    x0, cond : Tensor (B, D, L)
        True projection (zero where the data lacks it) and condition.
    mask : BoolTensor (B, L)
        Real positions.
    target : BoolTensor (B, L)
        Positions whose error counts (the utterances whose modality is to be recovered).

    Returns
    -------
    Scalar: mean over the sequences with a target of the summed squared error.
    """
    t = sample_times(x0.shape[0], eps, device=x0.device, dtype=x0.dtype)
    std = sde.std(t)
    xt, z = perturb(x0, std[:, None, None], z=zero_pad(torch.randn_like(x0), mask))
    ct = cond if clean_condition else cond + z * std[:, None, None]
    score = net(xt, t, ct, mask, std)
    err = (score * std[:, None, None] + z).pow(2).sum(1).masked_fill(~target, 0.0).sum(1)
    has = target.any(1)
    return (err * has).sum() / has.sum().clamp(min=1)


@torch.no_grad()
def euler_maruyama(net: nn.Module, sde: VESDE, cond: torch.Tensor, mask: torch.Tensor,
                   steps: int, eps: float = 1e-3, clean_condition: bool = False,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample (B, D, L) given the condition (B, D, L) (reference ``Euler_Maruyama_sampler``).

    ``steps = 0`` returns the initial noise ``N(0, std(1)^2)``; otherwise ``steps >= 2``
    times from 1 to ``eps``; zero at padding. ``generator``: the noise's source (None: the
    global RNG).
    """
    if steps == 1:
        raise ValueError("the sampler needs 0 or >= 2 steps (the step is t_0 - t_1)")
    B = cond.shape[0]

    def noise():
        return zero_pad(torch.randn(cond.shape, generator=generator, device=cond.device,
                                    dtype=cond.dtype), mask)
    if steps == 0:
        return noise() * sde.std(torch.ones((), device=cond.device, dtype=cond.dtype))

    def score(x, time):
        t = torch.full((B,), float(time), device=cond.device, dtype=cond.dtype)
        std = sde.std(t)
        c = cond if clean_condition else cond + noise() * std[:, None, None]
        return net(x, t, c, mask, std)
    return reverse_sde(score, cond, sde, steps, eps, noise=noise)
