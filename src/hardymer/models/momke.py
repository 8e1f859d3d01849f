"""MoMKE — modality knowledge experts (Xu, Jiang, Liang, ACM MM 2024; code ``wxxv/MoMKE``).

One expert per modality (a 4-layer attention stack over the utterances of a sequence), trained
first on its own modality (stage 1, ``unimodal``); then every *available* modality goes through
*all* experts and a per-utterance soft router mixes their outputs (stage 2, ``mixing``), under
the missing-modality condition. Fusion concatenates the per-modality results (zero where the
modality is missing) and adds a ReLU residual before the classifier.

Shapes: B sequences of S utterances, D = ``hidden``, M modalities (the paper: a, t, v).

Faithful to the reference in: no LayerNorm, no positional encoding, no attention output
projection, ``x <- x + (attn(x) + MLP(attn(x)))`` per layer, router MLP with dropout on its
logits, one Adam optimizer for both stages. Ours, and named as such: ``prenorm`` (off by
default); the stage-1 loss skips utterances whose modality the *data* lacks (the reference
cannot have such utterances); the three paper ablations as switches.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..data.dataset import Batch
from ..training.method import Method, Stage, task_loss
from .attention import MaskedSelfAttention, Packing
from .dropout import IMPLEMENTATIONS as DROPOUT_IMPLS
from .dropout import dropout as make_dropout
from .registry import register_method


@dataclass
class MoMKEConfig:
    """Hyper-parameters; defaults are the reference's IEMOCAP values."""

    hidden: int = 256            # D_e
    depth: int = 4               # layers per expert
    heads: int = 2
    dropout: float = 0.5         # input, MLP, router and fusion dropout
    attn_dropout: float = 0.0
    attention: str = "sdpa"      # "sdpa" or "loop" (reference formula, per-head loop)
    unimodal_stage: bool = True  # ablation "without unimodal expert training": False
    mixing: bool = True          # ablation "without experts mixing training": False
    router: bool = True          # ablation "without router" (equal weights): False
    prenorm: bool = False        # ours, not the paper's: LayerNorm before attention and MLP
    skip_absent: bool = True     # ours: no projection, router or expert pass for a modality
                                 # absent from the whole batch, and expert layers only on the
                                 # available utterances (no padding, no hidden rows). Same
                                 # outputs and gradients; with dropout on, the RNG stream and
                                 # so the numbers differ from false (the old path)
    attention_groups: bool = True  # ours, with skip_absent: attention on sequences of similar
                                 # length grouped, each group its own grid (no padding of the
                                 # batch's longest; exact); false = one (B, S) grid, the old path
    dropout_impl: str = "bits"   # ours: "bits" draws dropout masks from 16-bit chunks of
                                 # random words (~5x cheaper on CPU, keep probability exact to
                                 # 2^-16; models/dropout.py); "torch" is nn.Dropout, the old path


class Mlp(nn.Sequential):
    """Linear -> GELU -> Dropout -> Linear -> Dropout (the reference's ``Mlp``)."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, dropout: float,
                 dropout_impl: str = "bits"):
        super().__init__(nn.Linear(d_in, d_hidden), nn.GELU(), make_dropout(dropout, dropout_impl),
                         nn.Linear(d_hidden, d_out), make_dropout(dropout, dropout_impl))


class ExpertLayer(nn.Module):
    """``out = attn(x); out = out + MLP(out)``; the expert adds it to x."""

    def __init__(self, cfg: MoMKEConfig):
        super().__init__()
        self.attn = MaskedSelfAttention(cfg.hidden, cfg.heads, cfg.attn_dropout, cfg.attention)
        self.mlp = Mlp(cfg.hidden, cfg.hidden, cfg.hidden, cfg.dropout, cfg.dropout_impl)
        self.norm1 = nn.LayerNorm(cfg.hidden) if cfg.prenorm else nn.Identity()
        self.norm2 = nn.LayerNorm(cfg.hidden) if cfg.prenorm else nn.Identity()

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        out = self.attn(self.norm1(x), key_mask)
        return out + self.mlp(self.norm2(out))

    def packed(self, h: torch.Tensor, packing: Packing) -> torch.Tensor:
        """:meth:`forward` on the N available rows ``h`` (N, D) only (see ``Expert``)."""
        out = self.attn.packed(self.norm1(h), packing)
        return out + self.mlp(self.norm2(out))


class Expert(nn.Module):
    """A stack of residual expert layers. (B, S, D) -> (B, S, D).

    With ``packed``, only positions where ``key_mask`` is True are computed and the others come
    out zero. Nothing at a masked position can reach an unmasked one (it is no key, and the
    other layers are per utterance), so where the caller discards masked positions — MoMKE
    multiplies by availability, its losses mask them — the result and the gradients are those
    of the full grid, at the cost of the available utterances instead of B x S padded slots
    (IEMOCAP batches of 16 dialogues are about two thirds padding).
    """

    def __init__(self, cfg: MoMKEConfig):
        super().__init__()
        self.layers = nn.ModuleList(ExpertLayer(cfg) for _ in range(cfg.depth))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, packed: bool = False,
                grouped: bool = True) -> torch.Tensor:
        if not packed:
            for layer in self.layers:
                x = x + layer(x, key_mask)
            return x
        B, S, D = x.shape
        packing = Packing.of(key_mask, grouped)
        h = self.rows(x.reshape(B * S, D).index_select(0, packing.rows), packing)
        return packing.scatter(h, B * S).view(B, S, D)

    def rows(self, h: torch.Tensor, packing: Packing) -> torch.Tensor:
        """The packed computation: ``h`` (N, D) are the available positions of a (B, S)
        grid in ``packing``'s order (its ``rows`` say where each sits). Returns (N, D)."""
        for layer in self.layers:
            h = h + layer.packed(h, packing)
        return h


@register_method("momke")
class MoMKE(Method):
    """Modality knowledge experts with a soft router.

    Examples
    --------
    >>> from hardymer.models import create_method
    >>> m = create_method("momke", dims={"a": 8, "t": 8, "v": 8}, n_outputs=4,
    ...                   task="classification", hidden=16, depth=1)
    >>> [s.name for s in m.stages([2, 3])]
    ['unimodal', 'mixing']
    """

    Config = MoMKEConfig
    stage_names = ("unimodal", "mixing")

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        if config.attention not in ("sdpa", "loop"):
            raise ValueError(f"model.attention={config.attention!r}; expected 'sdpa' or 'loop'")
        if config.dropout_impl not in DROPOUT_IMPLS:
            raise ValueError(f"model.dropout_impl={config.dropout_impl!r}; expected 'bits' "
                             "(the default) or 'torch' (nn.Dropout, the old path)")
        if config.hidden % config.heads:
            raise ValueError(f"model.hidden={config.hidden} is not a multiple of "
                             f"model.heads={config.heads}")

    def __init__(self, config: MoMKEConfig, dims, n_outputs, task):
        super().__init__(config, dims, n_outputs, task)
        D, M = config.hidden, len(self.modalities)
        self.proj = nn.ModuleDict({m: nn.Linear(d, D) for m, d in dims.items()})
        self.drop = make_dropout(config.dropout, config.dropout_impl)
        self.experts = nn.ModuleDict({m: Expert(config) for m in self.modalities})
        self.routers = nn.ModuleDict({m: Mlp(D, D, M, config.dropout, config.dropout_impl)
                                      for m in self.modalities})
        self.unimodal_heads = nn.ModuleDict({m: nn.Linear(D, n_outputs) for m in self.modalities})
        self.fuse = nn.Linear(M * D, M * D)
        self.head = nn.Linear(M * D, n_outputs)

    def stages(self, epochs: list[int]) -> list[Stage]:
        e1, e2 = epochs
        return [Stage("unimodal", e1 if self.config.unimodal_stage else 0,
                      apply_condition=False, select=False),
                Stage("mixing", e2)]

    # --- pieces -------------------------------------------------------------------------------
    def _project(self, batch: Batch, names=None) -> dict[str, torch.Tensor]:
        """p_m = Dropout(Linear(x_m)) with unavailable inputs zeroed first, for the modalities
        ``names`` (default: all). (B, S, D) each."""
        out = {}
        for i, m in enumerate(self.modalities):
            if names is not None and m not in names:
                continue
            x = batch.x[m] * batch.available[..., i, None].to(batch.x[m].dtype)
            out[m] = self.drop(self.proj[m](x))
        return out

    def _through_experts(self, p: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
                         expert_names) -> dict[str, torch.Tensor]:
        """Every input modality of ``p`` through each named expert, stacked on the batch axis,
        on the full grid (the old path; the reference teacher reads its masked positions).

        Returns name -> (M', B, S, D): expert ``e``'s output for each of the M' inputs, in
        ``p``'s order.
        """
        x = torch.stack(list(p.values()))                         # (M', B, S, D)
        km = torch.stack([masks[m] for m in p])                   # (M', B, S)
        M, B, S, D = x.shape
        return {e: self.experts[e](x.reshape(M * B, S, D), km.reshape(M * B, S)).view(M, B, S, D)
                for e in expert_names}

    def present_modalities(self, batch: Batch) -> tuple[str, ...]:
        """The modalities whose work is needed: all, or with ``skip_absent`` those available
        for at least one utterance of the batch."""
        if not self.config.skip_absent:
            return self.modalities
        anywhere = batch.available.flatten(0, -2).any(0).tolist()    # (M,)
        return tuple(m for m, a in zip(self.modalities, anywhere) if a)

    def mixed_representations(self, batch: Batch) -> torch.Tensor:
        """Stage-2 per-modality representations r_m, zero where m is unavailable.

        With ``skip_absent``, a modality absent from the whole batch gets no projection, router
        or expert pass: its r_m would be multiplied by zero anyway. Its skipped parameters get
        zero gradients (not none), so the optimizer steps as it would without skipping.

        Returns
        -------
        Tensor (B, S, M, D)
        """
        names = self.present_modalities(batch)
        if self.config.skip_absent:
            r = self._mixed_rows(batch, names)
            if len(names) < len(self.modalities):
                r = self._scatter_modalities(r, names)
            return r.permute(1, 2, 0, 3)                                  # (B, S, M, D)
        p = self._project(batch, names)
        masks = {m: batch.available[..., i] for i, m in enumerate(self.modalities)}
        if self.config.mixing:
            outs = self._through_experts(p, masks, self.modalities)       # e -> (M', B, S, D)
            R = torch.stack([outs[e] for e in self.modalities], dim=3)    # (M', B, S, E, D)
            if self.config.router:
                w = torch.stack([self.routers[m](p[m]) for m in names]).softmax(-1)
            else:
                w = torch.full(R.shape[:-1], 1.0 / len(self.modalities), device=R.device)
            r = (w[..., None] * R).sum(dim=3)                             # (M', B, S, D)
        else:  # ablation: each modality only through its own expert
            r = torch.stack([self.experts[m](p[m], masks[m]) for m in names])
        if len(names) < len(self.modalities):
            r = self._scatter_modalities(r, names)
        r = r.permute(1, 2, 0, 3)                                         # (B, S, M, D)
        return r * batch.available[..., None].to(r.dtype)

    def _mixed_rows(self, batch: Batch, names) -> torch.Tensor:
        """:meth:`mixed_representations` computed on the available utterances only.

        The M' input modalities ``names`` are stacked on the batch axis as in
        :meth:`_through_experts`, then reduced to their N available positions: projection,
        routers, dropout and expert layers run on (N, D) rows (in a :class:`Packing`'s order,
        shared by every expert); only attention sees a grid, one per length group.
        Returns (M', B, S, D), zero where the modality is unavailable.
        """
        B, S, _ = batch.available.shape
        M_ = len(names)
        idx = [self.modalities.index(m) for m in names]
        km = batch.available[..., idx].permute(2, 0, 1).reshape(M_ * B, S)   # (M'B, S)
        per_m = km.view(M_, B * S)                                         # (M', B*S)
        p = [self.drop(self.proj[m](batch.x[m].reshape(B * S, -1)[per_m[k]]))
             for k, m in enumerate(names)]                                 # (N_m, D) each
        grouped = self.config.attention_groups
        if self.config.mixing:
            packing = Packing.of(km, grouped)
            h = torch.cat(p).index_select(0, packing.order)                # (N, D)
            R = torch.stack([self.experts[e].rows(h, packing) for e in self.modalities], 1)
            if self.config.router:                                         # (N, E, D)
                w = torch.cat([self.routers[m](pm) for m, pm in zip(names, p)]).softmax(-1)
                w = w.index_select(0, packing.order)
            else:
                w = torch.full(R.shape[:-1], 1.0 / len(self.modalities), device=R.device)
            r = (w[..., None] * R).sum(1)                                  # (N, D)
            return packing.scatter(r, M_ * B * S).view(M_, B, S, -1)
        out = []                  # ablation: each modality only through its own expert
        for k, m in enumerate(names):
            packing = Packing.of(km[k * B:(k + 1) * B], grouped)
            r = self.experts[m].rows(p[k].index_select(0, packing.order), packing)
            out.append(packing.scatter(r, B * S))
        return torch.stack(out).view(M_, B, S, -1)

    def _scatter_modalities(self, r: torch.Tensor, names) -> torch.Tensor:
        """(M', B, S, D) of ``names`` -> (M, B, S, D) with zeros for the skipped modalities,
        plus 0 x the skipped modules' parameters so that they get zero gradients."""
        full = r.new_zeros((len(self.modalities),) + tuple(r.shape[1:]))
        full[[self.modalities.index(m) for m in names]] = r
        skipped = [m for m in self.modalities if m not in names]
        modules = [self.proj[m] for m in skipped]
        if not self.config.mixing:
            modules += [self.experts[m] for m in skipped]
        elif self.config.router:
            modules += [self.routers[m] for m in skipped]
        zero = sum(q.sum() for mod in modules for q in mod.parameters() if q.requires_grad)
        return full + 0.0 * zero

    def fused(self, r: torch.Tensor) -> torch.Tensor:
        """(B, S, M, D) -> fused representation (B, S, M*D): ``z + Dropout(ReLU(Linear(z)))``."""
        z = r.flatten(2)
        return z + self.drop(torch.relu(self.fuse(z)))

    def fuse_head(self, r: torch.Tensor) -> torch.Tensor:
        """(B, S, M, D) -> logits (B, S, C)."""
        return self.head(self.fused(r))

    # --- Method API ---------------------------------------------------------------------------
    def forward(self, batch: Batch) -> torch.Tensor:
        return self.fuse_head(self.mixed_representations(batch))

    def unimodal_logits(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Stage 1: each modality through its own expert and head. name -> (B, S, C)."""
        p = self._project(batch)
        out = {}
        for i, m in enumerate(self.modalities):
            out[m] = self.unimodal_heads[m](self.experts[m](
                p[m], batch.available[..., i], self.config.skip_absent,
                self.config.attention_groups))
        return out

    def stage_loss(self, batch: Batch, stage: Stage):
        if stage.name == "unimodal":
            parts = {m: task_loss(logits, batch, self.task, mask=batch.available[..., i])
                     for i, (m, logits) in enumerate(self.unimodal_logits(batch).items())}
            loss = sum(parts.values())  # L_a + L_t + L_v, one step (gradients add up)
            return loss, {f"loss_{m}": float(v.detach()) for m, v in parts.items()}
        loss = task_loss(self(batch), batch, self.task)
        return loss, {"task": float(loss.detach())}
