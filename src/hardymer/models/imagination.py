"""Parts shared by the MMIN family (MMIN, IF-MMIN, CIF-MMIN): utterance encoders, the cascade
residual autoencoder, the classifier, and the two-stage scheme.

All three are utterance-level: a batch's (B, S) utterances are flattened to N rows and nothing
crosses utterances (no dialogue context). They train in two stages:

1. ``pretrain`` — a full-modality model (its encoders, plus the variant's invariant/consistent
   encoders) learns the task on every modality the data holds. It does not depend on the
   missing-modality condition, so the run trains it once per fold and every condition reuses it.
2. ``imagine`` — the stage-2 encoders start from the stage-1 ones (copied once, at the first
   stage-2 epoch); the autoencoder imagines the missing modalities' embeddings from the
   available ones under the condition. The frozen stage-1 encoders (in eval mode) give the
   targets: for each modality the embedding of its *true* value where the condition hides it,
   and of a zero input where it is available — exactly the reference's ``T_embds`` built from
   ``x * (1 - available)``. Blocks of modalities the data itself lacks have no target and are
   left out of that loss (the reference has no such utterances).

Encoders become MLPs on utterance-level feature vectors (the originals are an LSTM over audio
frames, a TextCNN over word vectors and an LSTM over face frames). Inputs of unavailable
modalities are zeroed from ``batch.available`` before the encoders, as the reference zeroes
them, so a hidden modality's values never reach a prediction.

Adam β1 follows the reference per stage (0.9 for the full-modality model, 0.5 for the
imagination model) through :meth:`optimizer_settings`. Not reproduced: the reference's linear
learning-rate decay over the second half of each stage, its per-network gradient clipping (ours
clips the global norm, ``train.grad_clip``) and its selection on the *validation UAR*
(ours selects on the toolkit's metric, WA by default; ``train.select_metric=UA`` restores it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import torch
from torch import nn

from ..data.dataset import Batch
from ..training.method import Method, Stage, task_loss


@dataclass
class ImaginationConfig:
    """Fields every MMIN-family method has; defaults are MMIN's IEMOCAP scripts'."""

    embd_size: int = 128                       # per modality (--embd_size_{a,v,l})
    encoder_depth: int = 2                     # ours: MLP encoders (GCNet's port: FC 128,128)
    encoder_dropout: float = 0.0
    ae_layers: list[int] = field(default_factory=lambda: [256, 128, 64])
    n_blocks: int = 5
    cls_layers: list[int] = field(default_factory=lambda: [128, 128])
    dropout: float = 0.5                       # stage-2 classifier
    pretrain_dropout: float = 0.3              # stage-1 classifier
    ce_weight: float = 1.0
    mse_weight: float = 1.0                    # imagination loss
    beta1: float = 0.5                         # Adam β1, stage 2 (reference option default)
    beta1_pretrain: float = 0.9                # Adam β1, stage 1 (--beta1 in stage-1 scripts)
    pattern_training: bool = False             # MMIN's own scheme: random incomplete patterns


class FcEncoder(nn.Sequential):
    """(N, d_in) -> (N, layers[-1]): [Linear -> ReLU -> Dropout] per layer."""

    def __init__(self, d_in: int, layers: tuple[int, ...], dropout: float):
        mods: list[nn.Module] = []
        for width in layers:
            mods += [nn.Linear(d_in, width), nn.ReLU(), nn.Dropout(dropout)]
            d_in = width
        super().__init__(*mods)


class FcClassifier(nn.Sequential):
    """(N, d_in) -> (N, n_out): [Linear -> ReLU -> Dropout] per hidden layer, then Linear."""

    def __init__(self, d_in: int, layers: tuple[int, ...], n_out: int, dropout: float):
        mods: list[nn.Module] = []
        for width in layers:
            mods += [nn.Linear(d_in, width), nn.ReLU(), nn.Dropout(dropout)]
            d_in = width
        super().__init__(*mods, nn.Linear(d_in, n_out))


class SharedEncoder(nn.Sequential):
    """IF/CIF-MMIN's invariant head (reference default branch): (N, d) -> (N, d),
    Linear -> LeakyReLU -> Linear -> LeakyReLU."""

    def __init__(self, d: int):
        super().__init__(nn.Linear(d, d), nn.LeakyReLU(), nn.Linear(d, d), nn.LeakyReLU())


class ResidualAE(nn.Module):
    """Cascade residual autoencoder. (N, D) -> (reconstruction (N, D), latents (N, n_blocks*L)).

    Block ``i`` encodes ``x_i`` (Linear/LeakyReLU down to ``layers[-1]``, no activation on the
    latent) and decodes it back (Linear/ReLU, last Linear plain). MMIN feeds each block its
    input plus the previous block's output, ``x_{i+1} = x_i + out_i`` (``x_0`` = input,
    ``out_{-1}`` = 0); IF/CIF-MMIN add the invariant vector instead, ``x_{i+1} = x_i + c``
    (``condition=c``), as their ``autoencoder_2``. The result is ``transition(x_last + out_last)``.
    """

    def __init__(self, d: int, layers: tuple[int, ...], n_blocks: int):
        super().__init__()
        self.encoders = nn.ModuleList(self._encoder(d, layers) for _ in range(n_blocks))
        self.decoders = nn.ModuleList(self._decoder(d, layers) for _ in range(n_blocks))
        self.transition = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d))

    @staticmethod
    def _encoder(d: int, layers) -> nn.Sequential:
        mods: list[nn.Module] = []
        for width in layers:
            mods += [nn.Linear(d, width), nn.LeakyReLU()]
            d = width
        return nn.Sequential(*mods[:-1])  # the latent has no activation

    @staticmethod
    def _decoder(d: int, layers) -> nn.Sequential:
        widths = list(reversed(layers)) + [d]
        mods: list[nn.Module] = []
        for a, b in zip(widths[:-2], widths[1:-1]):
            mods += [nn.Linear(a, b), nn.ReLU()]
        return nn.Sequential(*mods, nn.Linear(widths[-2], widths[-1]))

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        x_in, x_out = x, (torch.zeros_like(x) if condition is None else condition)
        latents = []
        for enc, dec in zip(self.encoders, self.decoders):
            x_in = x_in + (x_out if condition is None else condition)
            latent = enc(x_in)
            x_out = dec(latent)
            latents.append(latent)
        return self.transition(x_in + x_out), torch.cat(latents, dim=-1)


def flat(batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Utterance rows of a batch: ``x`` name -> (N, d), ``available`` (N, M), ``present`` (N, M),
    N = real utterances (padding dropped)."""
    keep = batch.utt_mask
    return ({m: v[keep] for m, v in batch.x.items()}, batch.available[keep],
            batch.present[keep])


def scatter(rows: torch.Tensor, batch: Batch) -> torch.Tensor:
    """(N, C) utterance rows back to (B, S, C), zeros at padding."""
    out = rows.new_zeros(*batch.utt_mask.shape, rows.shape[-1])
    out[batch.utt_mask] = rows
    return out


def incomplete_patterns(n_modalities: int) -> torch.Tensor:
    """(P, M) bool: every non-empty proper subset of the modalities (six for a, t, v)."""
    rows = [[i in keep for i in range(n_modalities)]
            for k in range(1, n_modalities) for keep in combinations(range(n_modalities), k)]
    return torch.tensor(rows, dtype=torch.bool)


class ImaginationMethod(Method):
    """Base of the MMIN family: stage bookkeeping, encoders, targets. Subclasses add their
    stage-1 extras (:meth:`pretrain_loss`) and stage-2 model (:meth:`imagine`)."""

    stage_names = ("pretrain", "imagine")

    def __init__(self, config, dims, n_outputs, task):
        super().__init__(config, dims, n_outputs, task)
        self.embd = config.embd_size
        # Stage 1: full-modality encoders (frozen targets in stage 2); stage 2: its own copies.
        self.pre_enc, self.enc = self.new_encoders(), self.new_encoders()
        self.register_buffer("stage2_initialised", torch.zeros((), dtype=torch.bool))
        self.register_buffer("patterns", incomplete_patterns(len(dims)), persistent=False)

    def new_encoders(self) -> nn.ModuleDict:
        """One MLP encoder per modality: (N, d_m) -> (N, embd_size)."""
        c = self.config
        return nn.ModuleDict({m: FcEncoder(d, (c.embd_size,) * c.encoder_depth,
                                           c.encoder_dropout) for m, d in self.dims.items()})

    def stages(self, epochs: list[int]) -> list[Stage]:
        e1, e2 = epochs
        return [Stage("pretrain", e1, apply_condition=False, select=False),
                Stage("imagine", e2)]

    def optimizer_settings(self, stage: Stage) -> dict:
        beta1 = self.config.beta1_pretrain if stage.name == "pretrain" else self.config.beta1
        return {"betas": (beta1, 0.999)}

    def on_epoch_start(self, epoch: int, stage: Stage, data) -> None:
        if stage.name == "imagine" and not bool(self.stage2_initialised):
            self.init_stage2_from_stage1()

    @torch.no_grad()
    def init_stage2_from_stage1(self) -> None:
        """Copy the stage-1 encoders into the stage-2 ones (the reference's ``post_process``);
        once per model, remembered in the state dict so a resumed run does not copy again."""
        for pre, new in self.stage2_pairs():
            new.load_state_dict(pre.state_dict())
        self.stage2_initialised.fill_(True)

    def stage2_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.pre_enc, self.enc)]

    # --- pieces -------------------------------------------------------------------------------
    @staticmethod
    def zeroed(x: dict[str, torch.Tensor], keep: torch.Tensor, modalities) -> dict:
        """Inputs with the blocks where ``keep`` (N, M) is False set to zero."""
        return {m: x[m] * keep[:, i, None].to(x[m].dtype) for i, m in enumerate(modalities)}

    def encode(self, encoders: nn.ModuleDict, x: dict[str, torch.Tensor]) -> torch.Tensor:
        """Concatenated embeddings (N, M * embd) in modality order."""
        return torch.cat([encoders[m](x[m]) for m in self.modalities], dim=-1)

    def stage2_available(self, batch: Batch) -> torch.Tensor:
        """(B, S, M) what the stage-2 model sees. With ``pattern_training`` (MMIN's own scheme,
        for complete training data) each training utterance draws one of the incomplete patterns
        anew, ignoring the condition; otherwise the condition's mask."""
        if not (self.training and self.config.pattern_training):
            return batch.available
        pick = torch.randint(len(self.patterns), batch.utt_mask.shape, device=batch.x[
            self.modalities[0]].device)
        avail = self.patterns[pick] & batch.present & batch.utt_mask[..., None]
        empty = ~avail.any(-1, keepdim=True)
        return torch.where(empty, batch.present & batch.utt_mask[..., None], avail)

    @torch.no_grad()
    def imagination_targets(self, x, available, present) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen stage-1 embeddings of ``x * (1 - available)`` (N, M*embd) and the (N, M*embd)
        weight of each entry: 1 where the block has a target (available, or hidden and held by
        the data), 0 where the data lacks the hidden modality."""
        self.pre_enc.eval()
        target = self.encode(self.pre_enc, self.zeroed(x, ~available, self.modalities))
        has = (available | present).to(target.dtype)                      # (N, M)
        return target, has.repeat_interleave(self.embd, dim=1)

    def pretrain_logits(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def forward(self, batch: Batch) -> torch.Tensor:
        x, _, _ = flat(batch)
        avail = batch.available[batch.utt_mask]
        return scatter(self.imagine(x, avail)["logits"], batch)

    def imagine(self, x: dict[str, torch.Tensor], available: torch.Tensor) -> dict:
        """Stage-2 forward on utterance rows: dict with ``logits`` (N, C), ``recon`` (N, M*embd),
        ``feat`` (N, M*embd) and the variant's extras."""
        raise NotImplementedError

    def stage_loss(self, batch: Batch, stage: Stage):
        if stage.name == "pretrain":
            return self.pretrain_loss(batch)
        avail_b = self.stage2_available(batch)
        x, _, present = flat(batch)
        avail = avail_b[batch.utt_mask]
        out = self.imagine(x, avail)
        cls = task_loss(scatter(out["logits"], batch), batch, self.task)
        target, weight = self.imagination_targets(x, avail, present)
        mse = masked_mse(out["recon"], target, weight)
        parts = {"task": cls, "imagination": mse}
        parts.update(self.extra_losses(x, avail, present, out))
        loss = sum(self.weight(name) * value for name, value in parts.items())
        return loss, {k: float(v.detach()) for k, v in parts.items()}

    def weight(self, name: str) -> float:
        return {"task": self.config.ce_weight, "imagination": self.config.mse_weight}[name]

    def extra_losses(self, x, available, present, out) -> dict[str, torch.Tensor]:
        return {}

    def pretrain_loss(self, batch: Batch):
        raise NotImplementedError


def masked_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the entries with weight 1 (the reference's ``MSELoss`` mean)."""
    return ((pred - target).pow(2) * weight).sum() / weight.sum().clamp(min=1)
