"""IMDer — the registered method: frozen projections, conditional diffusion per missing
modality, refinement, MulT fusion. See the package docstring for the whole picture."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ...data.dataset import Batch
from ...training.method import Method, Stage, task_loss
from ..registry import register_method
from .fusion import MulTFusion
from .refine import Refiner
from .score import VESDE, ScoreMLP, ScoreUNet, dsm_loss, euler_maruyama

# The reference's per-batch schedule (IMDER.py l.64-65): at missing rate mr, the first
# miss_2[int(mr*10 - 1)] of an epoch's batches miss two modalities, the next miss_1[...] miss
# one, the rest none.
MISS_2 = (0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)
MISS_1 = (0.1, 0.2, 0.3, 0.2, 0.1, 0.0, 0.0)
SCORE_NETS = ("unet", "mlp")
REGRESSION_LOSSES = ("l1", "mse")


@dataclass
class IMDerConfig:
    """Hyper-parameters; defaults are the reference's MOSI values (config/config.json), which
    the IEMOCAP preset also takes (no IEMOCAP config exists upstream; default.yaml says why)."""

    # --- projections and MulT fusion -----------------------------------------------------
    hidden: int = 32             # d: dst_feature_dim_nheads[0], every projection's width
    heads: int = 8               # dst_feature_dim_nheads[1], fusion attention heads
    nlevels: int = 4             # cross-modal transformer layers; memories max(nlevels, 3)
    attn_dropout: float = 0.0    # attention dropout, keys from text, and the memories
    attn_dropout_a: float = 0.2  # keys from audio
    attn_dropout_v: float = 0.0  # keys from video
    relu_dropout: float = 0.0
    embed_dropout: float = 0.2   # after scaling and positions, queries and keys
    res_dropout: float = 0.0
    output_dropout: float = 0.0  # in the residual block before the head
    text_dropout: float = 0.0    # on the text features before their projection
    dropout: float | None = None  # ours: when set, the value of every dropout above
    causal: bool = True          # attn_mask: true — position i attends to positions <= i
    # --- diffusion -----------------------------------------------------------------------
    sigma: float = 25.0          # VE-SDE (imder.py l.81)
    dsm_eps: float = 1e-5        # t ~ U(dsm_eps, 1) in the DSM loss
    sample_eps: float = 1e-3     # the sampler's last time
    sampling_steps: int = 100    # Euler-Maruyama steps, at train and test (num_steps)
    clean_condition: bool = False  # ours: the condition is not perturbed (the reference adds
                                 # the data's noise z in DSM, fresh noise in each sampler step)
    score_net: str = "unet"      # "unet" (reference ScoreNet) or "mlp" (ours: per utterance)
    score_channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    score_embed_dim: int = 256   # Gaussian-Fourier time features
    fourier_scale: float = 30.0
    score_heads: int = 8         # the U-Net's cross-attention to the condition
    score_layers: int = 2        # layers of each of those transformers
    mlp_hidden: int = 256        # score_net "mlp" only
    mlp_depth: int = 2           # score_net "mlp" only
    refine_blocks: int = 20      # RCAB blocks of rec_m's Group
    refine_reduction: int = 16   # channel-attention reduction
    refine_kernel: int = 3       # rec_m's conv kernel over the utterances (reference: 3)
    diffusion_weight: float = 0.1  # loss = task + 0.1 (sum_m DSM_m + L_rec) (IMDER.py l.81)
    regression_loss: str = "l1"  # the reference's nn.L1Loss; "mse": the toolkit's task_loss
    grad_value_clip: float | None = 1.0  # clip_grad_value_ (MOSI 1.0, MOSEI 0.6); null: off
    sampler_seed: int = 0        # ours: seeds the sampler's noise in evaluation
    reference_batch_masks: bool = False  # the reference's one pattern per batch (see docs)


@register_method("imder")
class IMDer(Method):
    """Incomplete Multimodality-Diffused Emotion Recognition (see the package docstring).

    ``forward``: (B, S, n_outputs), every unavailable modality recovered by sampling.

    Examples
    --------
    >>> from hardymer.models import create_method
    >>> m = create_method("imder", dims={"a": 6, "t": 10, "v": 6}, n_outputs=4,
    ...                   task="classification", hidden=8, heads=2, nlevels=1,
    ...                   score_channels=[8, 8], score_embed_dim=8, score_heads=2,
    ...                   sampling_steps=5, refine_blocks=2)
    >>> [s.name for s in m.stages([2, 3])]
    ['backbone', 'diffusion']
    """

    Config = IMDerConfig
    stage_names = ("backbone", "diffusion")

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        c = config
        if c.score_net not in SCORE_NETS:
            raise ValueError(f"model.score_net={c.score_net!r}; expected 'unet' (the "
                             "reference's U-Net) or 'mlp' (one per utterance)")
        if c.regression_loss not in REGRESSION_LOSSES:
            raise ValueError(f"model.regression_loss={c.regression_loss!r}; expected 'l1' "
                             "(the reference) or 'mse' (the toolkit's task loss)")
        if c.hidden % c.heads:
            raise ValueError(f"model.hidden={c.hidden} is not a multiple of "
                             f"model.heads={c.heads}")
        if c.nlevels < 1:
            raise ValueError(f"model.nlevels={c.nlevels!r}; expected a number of layers >= 1")
        if c.sampling_steps < 2:
            raise ValueError(f"model.sampling_steps={c.sampling_steps!r}; expected >= 2 (the "
                             "step is t_0 - t_1; the paper: 100)")
        if not c.sigma > 1:
            raise ValueError(f"model.sigma={c.sigma!r}; expected a value > 1")
        for key in ("dsm_eps", "sample_eps"):
            if not 0 < getattr(c, key) < 1:
                raise ValueError(f"model.{key}={getattr(c, key)!r}; expected a time in (0, 1)")
        if not c.fourier_scale > 0:
            raise ValueError(f"model.fourier_scale={c.fourier_scale!r}; expected a value > 0")
        if c.score_net == "unet":
            ch = list(c.score_channels)
            if not ch or not all(isinstance(w, int) and w > 0 for w in ch):
                raise ValueError(f"model.score_channels={ch!r}; expected a list of widths > 0")
            if ch[0] != c.hidden:
                raise ValueError(f"model.score_channels={ch!r}: the first width must be "
                                 f"model.hidden={c.hidden} (the condition's width)")
            if any(w % c.score_heads for w in ch):
                raise ValueError(f"model.score_channels={ch!r} are not all multiples of "
                                 f"model.score_heads={c.score_heads}")
            if c.score_layers < 1:
                raise ValueError(f"model.score_layers={c.score_layers!r}; expected >= 1")
        if c.refine_blocks < 0:
            raise ValueError(f"model.refine_blocks={c.refine_blocks!r}; expected >= 0")
        if c.refine_reduction < 1:
            raise ValueError(f"model.refine_reduction={c.refine_reduction!r}; expected >= 1")
        if c.refine_kernel < 1 or c.refine_kernel % 2 == 0:
            raise ValueError(f"model.refine_kernel={c.refine_kernel!r}; expected an odd "
                             "kernel >= 1")
        if c.grad_value_clip is not None and not c.grad_value_clip > 0:
            raise ValueError(f"model.grad_value_clip={c.grad_value_clip!r}; expected null "
                             "(off) or a value > 0")

    def __init__(self, config: IMDerConfig, dims, n_outputs, task):
        super().__init__(config, dims, n_outputs, task)
        cfg, D, M = config, config.hidden, len(self.modalities)
        if M < 2:
            raise ValueError(f"imder needs at least two modalities, got {self.modalities}")

        def drop(name):
            return getattr(cfg, name) if cfg.dropout is None else cfg.dropout
        # Bias-free like the reference's Conv1d projections: a hidden modality projects to 0.
        self.proj = nn.ModuleDict({m: nn.Linear(d, D, bias=False) for m, d in dims.items()})
        key_dropout = {m: drop("attn_dropout_a") if role(m) == "a" else
                       drop("attn_dropout_v") if role(m) == "v" else drop("attn_dropout")
                       for m in self.modalities}
        self.fusion = MulTFusion(self.modalities, D, cfg.heads, cfg.nlevels, key_dropout,
                                 drop("attn_dropout"), drop("relu_dropout"),
                                 drop("res_dropout"), drop("embed_dropout"),
                                 drop("output_dropout"), cfg.causal, n_outputs)
        self.text_dropout = drop("text_dropout")
        self.sde = VESDE(cfg.sigma)
        self.score = nn.ModuleDict({m: self._score_net() for m in self.modalities})
        # cat_va / cat_la / cat_lv: a 1x1 Conv1d over the two other projections = a Linear
        # per utterance.
        self.condition_maps = nn.ModuleDict({m: nn.Linear((M - 1) * D, D)
                                             for m in self.modalities})
        self.refine = nn.ModuleDict({m: Refiner(D, cfg.refine_blocks, cfg.refine_reduction,
                                                cfg.refine_kernel) for m in self.modalities})
        if cfg.grad_value_clip is not None:
            # clip_grad_value_ after backward, done by the parameters' own hooks: the trainer
            # has norm clipping only, and zeroes the gradients before each single backward.
            clip = float(cfg.grad_value_clip)
            for q in self.parameters():
                q.register_hook(lambda g, c=clip: g.clamp(-c, c))
        self._schedule: dict | None = None

    def _score_net(self) -> nn.Module:
        cfg = self.config
        if cfg.score_net == "mlp":
            return ScoreMLP(cfg.hidden, cfg.mlp_hidden, cfg.mlp_depth, cfg.score_embed_dim,
                            cfg.fourier_scale)
        return ScoreUNet(cfg.hidden, list(cfg.score_channels), cfg.score_embed_dim,
                         cfg.score_heads, cfg.score_layers, cfg.causal, cfg.fourier_scale)

    def stages(self, epochs: list[int]) -> list[Stage]:
        e1, e2 = epochs
        return [Stage("backbone", e1, apply_condition=False, select=False),
                Stage("diffusion", e2)]

    # --- pieces -------------------------------------------------------------------------------
    def project(self, batch: Batch, which: torch.Tensor) -> dict[str, torch.Tensor]:
        """Projections (B, S, D) of the entries ``which`` (B, S, M) allows, zero elsewhere
        (masked_fill on the inputs: hidden values never get in, even inf)."""
        out = {}
        for i, m in enumerate(self.modalities):
            x = batch.x[m].masked_fill(~which[..., i, None], 0.0)
            if role(m) == "t" and self.text_dropout:
                x = nn.functional.dropout(x, self.text_dropout, self.training)
            out[m] = self.proj[m](x)
        return out

    def conditions(self, p: dict[str, torch.Tensor], available: torch.Tensor
                   ) -> dict[str, torch.Tensor]:
        """Each modality's condition per utterance (B, S, D) from the *other* available ones:
        one available -> its projection; two or more -> the 1x1 map over the others'
        concatenation (unavailable ones zero); none -> 0. ``p`` is zero where unavailable."""
        out = {}
        for i, m in enumerate(self.modalities):
            others = [o for o in self.modalities if o != m]
            idx = [self.modalities.index(o) for o in others]
            n_other = available[..., idx].sum(-1)                          # (B, S)
            single = torch.stack([p[o] for o in others]).sum(0)            # the one available
            joint = self.condition_maps[m](torch.cat([p[o] for o in others], -1))
            out[m] = torch.where((n_other >= 2)[..., None], joint, single)
        return out

    def _generator(self, i: int, device) -> torch.Generator | None:
        """Training: None (the global RNG, seeded by the trainer); evaluation: a generator
        seeded afresh per forward and modality, so predictions are deterministic."""
        if self.training:
            return None
        return torch.Generator(device=device).manual_seed(self.config.sampler_seed * 7919 + i)

    def sample(self, m: str, cond: torch.Tensor, mask: torch.Tensor,
               steps: int | None = None) -> torch.Tensor:
        """Raw Euler-Maruyama sample of modality ``m``: cond (B, S, D) -> (B, S, D)."""
        cfg = self.config
        raw = euler_maruyama(self.score[m], self.sde, cond.detach().transpose(1, 2), mask,
                             cfg.sampling_steps if steps is None else steps, cfg.sample_eps,
                             cfg.clean_condition,
                             self._generator(self.modalities.index(m), cond.device))
        return raw.transpose(1, 2)

    def recover(self, cond: dict[str, torch.Tensor], batch: Batch,
                steps: int | None = None) -> dict[str, torch.Tensor]:
        """Refined recoveries (B, S, D) of every modality unavailable at some real utterance
        of the batch (sampled under no_grad, refined with gradients)."""
        out, mask = {}, batch.utt_mask
        for i, m in enumerate(self.modalities):
            if (mask & ~batch.available[..., i]).any():
                raw = self.sample(m, cond[m], mask, steps)
                out[m] = self.refine[m](raw.transpose(1, 2), mask).transpose(1, 2)
        return out

    def complete(self, p: dict[str, torch.Tensor], rec: dict[str, torch.Tensor],
                 available: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per utterance: the projection where available, the recovery elsewhere."""
        return {m: torch.where(available[..., i, None], p[m], rec[m]) if m in rec else p[m]
                for i, m in enumerate(self.modalities)}

    def task_term(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        """CE; for regression the reference's L1 (``regression_loss="l1"``) or MSE."""
        if self.task == "regression" and self.config.regression_loss == "l1":
            err = (pred[..., 0] - batch.labels.float()).abs().masked_fill(~batch.utt_mask, 0.0)
            return err.sum() / batch.utt_mask.sum().clamp(min=1)
        return task_loss(pred, batch, self.task)

    # --- Method API ---------------------------------------------------------------------------
    def backbone(self, batch: Batch) -> torch.Tensor:
        """Stage 1: the fusion on the (trainable) projections, zero where unavailable."""
        return self.fusion(self.project(batch, batch.available), batch.utt_mask)

    def forward(self, batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            p = self.project(batch, batch.available)
        rec = self.recover(self.conditions(p, batch.available), batch)
        return self.fusion(self.complete(p, rec, batch.available), batch.utt_mask)

    def stage_loss(self, batch: Batch, stage: Stage) -> tuple[torch.Tensor, dict[str, float]]:
        if stage.name == "backbone":
            loss = self.task_term(self.backbone(batch), batch)
            return loss, {"task": float(loss.detach())}
        if self._schedule is not None and self.training:
            batch = self._reference_batch(batch)
        avail, mask, cfg = batch.available, batch.utt_mask, self.config
        with torch.no_grad():                       # frozen projections (stage 1's)
            p = self.project(batch, avail)
            truth = self.project(batch, batch.present)   # DSM data and L_rec targets
        cond = self.conditions(p, avail)
        zero = p[self.modalities[0]].new_zeros(())
        dsm, rec_loss = {}, {}
        for i, m in enumerate(self.modalities):
            target = mask & ~avail[..., i] & batch.present[..., i]      # hidden but present
            dsm[m] = zero
            if target.any():
                dsm[m] = dsm_loss(self.score[m], self.sde, truth[m].transpose(1, 2),
                                  cond[m].transpose(1, 2), mask, target, cfg.dsm_eps,
                                  cfg.clean_condition)
        rec = self.recover(cond, batch)
        for i, m in enumerate(self.modalities):
            target = mask & ~avail[..., i] & batch.present[..., i]
            rec_loss[m] = ((rec[m] - truth[m]).pow(2).mean(-1)[target].mean()
                           if m in rec and target.any() else zero)
        task = self.task_term(self.fusion(self.complete(p, rec, avail), mask), batch)
        total_dsm, total_rec = sum(dsm.values()), sum(rec_loss.values())
        loss = task + cfg.diffusion_weight * (total_dsm + total_rec)
        parts = {"task": float(task.detach()), "rec": float(total_rec.detach()),
                 **{f"dsm_{m}": float(v.detach()) for m, v in dsm.items()}}
        return loss, parts

    # --- the reference's per-batch masks (reference_batch_masks) -------------------------------
    def on_epoch_start(self, epoch: int, stage: Stage, data) -> None:
        self._schedule = None
        cond = data.condition
        if self.config.reference_batch_masks and stage.apply_condition and cond.is_random:
            # int(mr*10 - 1) as the reference: mr = 0 gives -1, i.e. miss_2[-1] = 1.0 (every
            # batch misses two, issue #7); rates >= 0.8 (an IndexError there) take the last.
            i = min(int(cond.rate * 10 - 1), len(MISS_2) - 1)
            self._schedule = {"miss_2": MISS_2[i], "miss_1": MISS_1[i],
                              "n": max(len(data.fold.train), 1), "two": 0, "one": 0}

    def _reference_batch(self, batch: Batch) -> Batch:
        """One random pattern for the whole batch: while the epoch's share of sequences seen
        missing two is below miss_2, keep one modality; then while missing one is below
        miss_1, keep M-1; then all (``random.sample`` of the kept ones, here torch's RNG)."""
        s, M, B = self._schedule, len(self.modalities), batch.utt_mask.shape[0]
        if s["two"] / s["n"] < s["miss_2"]:
            keep, s["two"] = max(M - 2, 1), s["two"] + B
        elif s["one"] / s["n"] < s["miss_1"]:
            keep, s["one"] = M - 1, s["one"] + B
        else:
            keep = M
        pattern = torch.zeros(M, dtype=torch.bool)
        pattern[torch.randperm(M)[:keep]] = True
        return batch.with_available(pattern.to(batch.present.device).expand_as(batch.present))


def role(modality: str) -> str:
    """The reference's role of a modality by its name's first letter: ``"a"`` audio, ``"v"``
    video / vision, ``"t"`` text (``l`` in the reference) and anything else."""
    return modality[:1].lower() if modality[:1].lower() in ("a", "v") else "t"
