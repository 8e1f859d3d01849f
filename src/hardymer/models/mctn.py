"""MCTN — Multimodal Cyclic Translation Network (Pham, Liang, Manzini, Morency, Póczos, AAAI 2019,
arXiv 1812.07809; code ``hainow/MCTN``: ``models/trimodals.py``, ``seq2seq/mctn_models.py``,
``seq2seq/cells.py``, ``models/regression_model.py``, ``configs/hierarchical_mctn.yaml``).

A joint representation is learnt by *translating* a source modality into a target one: the
encoder's output is the representation. Level 1: a BiLSTM encoder (directions summed) reads the
source, an attention-LSTM decoder emits the target; the *same* encoder and decoder translate the
decoded target back into the source (cycle). Level 2: a second BiLSTM encoder reads the level-1
code and decodes the third modality (no cycle). The head (an LSTM, attention pooling, a dense
layer with L2 0.01) reads the level-2 code. Loss = 0.1 MSE(level-1 translation) + 0.1 MSE(cycle)
+ 0.1 MSE(level-2 translation) + 1.0 task loss (the reference: MAE of the sentiment score).
At test only the source is read, so the targets may be missing.

Our port, on utterance vectors. Every modality has its own slot of the concatenated width
D = sum(d_m) (``[x_a; x_t; x_v]`` in data-set order); an encoder reads a D-wide vector in which
only its input slots are non-zero, plus the M-wide mask of those slots, and a decoder emits the
whole D-wide vector, of which the target slots are read. Per utterance, its availability pattern
``P`` (``batch.available``) gives a *route* (:meth:`MCTN.routes`): source slots, level-1 targets,
level-2 targets, for one of two forms:

* ``hierarchical`` (the spec's design for fixed conditions; order ``t, a, v`` = ``order``):
  {m}: source m, level-1 target = the first missing modality in ``order``, level-2 target = the
  other one, read from the level-1 code; two available: source = both, target = the missing one,
  with a cycle and no level 2 (the reference's bimodal MCTN, whose head reads the level-1 code);
  {a, t, v}: the reference's t -> a -> v, so only t is read for the prediction (a, v are
  translation targets in training and ignored at test, as in the reference).
* ``denoising`` (ours, for random missing rates; **a denoising variant, not the reference**):
  source = every available modality (the others zero) plus the mask, level-1 target = every
  hidden modality, cycle back to the source, no level 2.

``form="auto"`` (default) takes ``denoising`` when the model is trained under a random missing
rate and ``hierarchical`` under a fixed condition; the choice is stored with the weights (buffer
``denoising_form``), so a model keeps its form when evaluated under another condition, and
routes each utterance by its own pattern there too: any mix of patterns in one batch works.
A hierarchical model evaluated on patterns it never trained on (e.g. trained on {a}, evaluated
on {a, t}) goes through parts of the network no loss trained (the level-1 head), so its
predictions are finite but close to chance there; that is MCTN's premise (one model per source).

Shapes: B sequences of at most S utterances; D = sum of the modality dims, M modalities,
H = ``hidden`` (level 1), H2 = ``level2_hidden``, Hc = ``head_hidden``.

Translation targets are read only where the data holds them (``present``), on the utterance's
target slots (which under the hierarchical form's {a, t, v} route are available modalities, and
otherwise hidden ones); nothing the model predicts from depends on a hidden value
(``masked_fill``, so even inf or NaN never get in).

Deviations from the reference, all deliberate:

* Sequences: the reference translates word-aligned sequences (L = 20); ours are utterance
  vectors (L = 1). The BiLSTM encoders run on one step from a zero state (torch ``nn.LSTM``,
  directions summed); the attention-LSTM decoder is one step of an LSTM cell from a zero state
  whose input is the encoder output (attention over one step has weight 1) and a dense output;
  the head is one LSTM step and a dense layer (its attention pooling over one step is the
  identity). ``context=True`` (ours, *added context*, off by default) runs the encoders and the
  head's LSTM over the utterances of a dialogue instead of each utterance alone.
* Common width: the reference zero-pads every modality to the largest feature dimension and
  overlays them at offset 0; ours gives each modality its own slot of the D-wide concatenation
  and adds the slot mask to the encoder input, because one shared encoder/decoder must serve
  several sources (two-modality sources, random masks, evaluation under other conditions).
  The translation and cycle MSEs average over each utterance's target slots' own dimensions
  (the reference's Keras MSE also averages over the padding dimensions), then over utterances.
* Task head: cross-entropy for classification (IEMOCAP), the reference only regresses; for
  regression the reference's MAE (``regression_loss="mae"``, default) or our ``task_loss`` MSE
  (``"mse"``). The L2 0.01 penalty is on the dense weights of the head(s) the batch uses. Two
  heads: one on the level-1 code (routes without level 2), one on the level-2 code.
* Decoder output: linear; ``reference_tanh_output=True`` restores the reference's ``tanh``
  (outputs bounded to [-1, 1], so only sensible on standardised features).
* Gates: torch's sigmoid; Keras 2.1's ``LSTM`` (the head) defaults to ``hard_sigmoid``.
  Initialisation: torch's defaults, not Keras's glorot / orthogonal.
* Training protocol (ours, the trainer's): selection on the validation metric with
  ``train.patience`` 20 (the reference: early stopping on the validation *loss*, patience 20).

Reference behaviours not reproduced, and why:

* The attention cell's forget gate reuses the input-gate slice (``cells.py:105``): with one
  decoding step from a zero cell state the forget gate multiplies zero, so it has no effect.
* Prediction with the last-epoch weights instead of the best checkpoint, and ``train()``
  silently resuming from an existing checkpoint file: protocol-level, owned by the trainer.
* The reference's 2/3 split of MOSI by sorted video id and its 10% validation tail: our
  protocol's folds.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..data.dataset import Batch
from ..training.method import Method, Stage, task_loss
from .graph import packed_rnn
from .registry import register_method

FORMS = ("auto", "hierarchical", "denoising")
REGRESSION_LOSSES = ("mae", "mse")


@dataclass
class MCTNConfig:
    """Hyper-parameters; defaults are ``configs/hierarchical_mctn.yaml`` and ``utils/args.py``."""

    hidden: int = 32                 # translation1.hidden_dim (level-1 encoder and decoder)
    level2_hidden: int = 32          # translation2.hidden_dim
    head_hidden: int = 32            # regression.reg_hidden_dim (the head's LSTM)
    head_l2: float = 0.01            # regression.l2_factor: L2 on the head's dense kernel
    translation_weight: float = 0.1  # translation1.loss_weight
    cycle_weight: float = 0.1        # translation1.cycle_loss_weight
    translation2_weight: float = 0.1  # translation2.loss_weight
    task_weight: float = 1.0         # regression.loss_weight
    dropout: float = 0.0             # mctn_model(dropout=0.0): before each decoder
    order: list[str] = field(default_factory=lambda: ["t", "a", "v"])  # args.py: -f t c f
    form: str = "auto"               # "auto", "hierarchical" or "denoising" (module docstring)
    regression_loss: str = "mae"     # regression.loss_type 'mae'; "mse": our task_loss
    reference_tanh_output: bool = False  # cells.py:111: tanh on the decoders' outputs
    context: bool = False            # ours, added context: encoders/head LSTM over the dialogue


def lstm_step(x: torch.Tensor, w_ih: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor
              ) -> torch.Tensor:
    """One LSTM step from a zero state (h0 = c0 = 0): the recurrent weights and the forget
    gate multiply zeros. (..., d_in) -> (..., H); torch's gate order i, f, g, o."""
    i, _, g, o = (F.linear(x, w_ih, b_ih) + b_hh).chunk(4, -1)
    return torch.sigmoid(o) * torch.tanh(torch.sigmoid(i) * torch.tanh(g))


class Encoder(nn.Module):
    """BiLSTM with its two directions summed (``merge_mode='sum'``). (B, S, d_in) -> (B, S, H).

    One step per utterance from a zero state (:func:`lstm_step`, equal to ``nn.LSTM`` on
    length-1 sequences); with ``context``, the LSTM over the dialogue's utterances.
    """

    def __init__(self, d_in: int, hidden: int, bidirectional: bool = True):
        super().__init__()
        self.lstm = nn.LSTM(d_in, hidden, batch_first=True, bidirectional=bidirectional)
        self.hidden = hidden

    def forward(self, x: torch.Tensor, utt_mask: torch.Tensor, context: bool) -> torch.Tensor:
        B, S, _ = x.shape
        if not context:
            lstm = self.lstm
            return sum(lstm_step(x, getattr(lstm, f"weight_ih_l0{sfx}"),
                                 getattr(lstm, f"bias_ih_l0{sfx}"),
                                 getattr(lstm, f"bias_hh_l0{sfx}"))
                       for sfx in ("", "_reverse")[:1 + lstm.bidirectional])   # (B, S, H)
        # packed: each dialogue's backward direction starts at its last utterance
        out = packed_rnn(self.lstm, x, utt_mask.sum(1))                       # (B, S, k H)
        return out.view(B, S, -1, self.hidden).sum(2)                         # (B, S, H)


class Decoder(nn.Module):
    """One step of the attention-LSTM decoder cell: LSTM cell from a zero state on the encoder
    output, dense output (``tanh`` with ``tanh_output``). (B, S, H) -> (B, S, D)."""

    def __init__(self, hidden: int, d_out: int, dropout: float, tanh_output: bool):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.cell = nn.LSTMCell(hidden, hidden)
        self.out = nn.Linear(hidden, d_out)
        self.tanh_output = tanh_output

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        c = self.cell                           # zero (h, c): the forget gate multiplies zero
        y = self.out(lstm_step(self.dropout(z), c.weight_ih, c.bias_ih, c.bias_hh))
        return torch.tanh(y) if self.tanh_output else y


class Head(nn.Module):
    """LSTM(Hc) -> (attention pooling over one step: identity) -> Dense. (B, S, H) -> (B, S, C)."""

    def __init__(self, d_in: int, hidden: int, n_outputs: int):
        super().__init__()
        self.rnn = Encoder(d_in, hidden, bidirectional=False)
        self.out = nn.Linear(hidden, n_outputs)

    def forward(self, z: torch.Tensor, utt_mask: torch.Tensor, context: bool) -> torch.Tensor:
        return self.out(self.rnn(z, utt_mask, context))


@register_method("mctn")
class MCTN(Method):
    """Hierarchical cyclic translation; the level-1 (or level-2) encoder code is classified.

    Examples
    --------
    >>> import torch
    >>> from hardymer.models import create_method
    >>> m = create_method("mctn", {"a": 4, "t": 6, "v": 4}, 4, "classification")
    >>> src, t1, t2 = m.routes(torch.tensor([[[True, False, False]]]), torch.tensor([[True]]))
    >>> t1.int().tolist(), t2.int().tolist()     # {a}: level 1 -> t, level 2 -> v
    ([[[0, 1, 0]]], [[[0, 0, 1]]])
    """

    Config = MCTNConfig

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        if config.form not in FORMS:
            raise ValueError(f"model.form={config.form!r}; expected one of {list(FORMS)}")
        if config.regression_loss not in REGRESSION_LOSSES:
            raise ValueError(f"model.regression_loss={config.regression_loss!r}; expected "
                             f"'mae' (the reference) or 'mse' (task_loss)")
        if not config.head_l2 >= 0:
            raise ValueError(f"model.head_l2={config.head_l2!r}; expected a value >= 0")
        order = config.order
        if not (isinstance(order, (list, tuple)) and all(isinstance(m, str) for m in order)
                and len(set(order)) == len(order)):
            raise ValueError(f"model.order={order!r}; expected a list of distinct modality "
                             "names, e.g. [t, a, v]")

    def __init__(self, config: MCTNConfig, dims, n_outputs, task):
        super().__init__(config, dims, n_outputs, task)
        c, M = config, len(self.modalities)
        D = sum(self.dims.values())
        # Hierarchy order: the configured names the data has, then the others in data order.
        order = [m for m in c.order if m in self.dims]
        order += [m for m in self.modalities if m not in order]
        self.order = [self.modalities.index(m) for m in order]
        self.register_buffer("slot_sizes", torch.tensor(list(self.dims.values())),
                             persistent=False)
        # Which form ``auto`` resolved to (set at the first conditioned training epoch).
        self.register_buffer("denoising_form", torch.tensor(c.form == "denoising"))
        self.encoder = Encoder(D + M, c.hidden)
        self.decoder = Decoder(c.hidden, D, c.dropout, c.reference_tanh_output)
        self.encoder2 = Encoder(c.hidden, c.level2_hidden)
        self.decoder2 = Decoder(c.level2_hidden, D, c.dropout, c.reference_tanh_output)
        self.head1 = Head(c.hidden, c.head_hidden, n_outputs)         # routes without level 2
        self.head2 = Head(c.level2_hidden, c.head_hidden, n_outputs)  # routes with level 2

    def on_epoch_start(self, epoch: int, stage: Stage, data) -> None:
        condition = getattr(data, "condition", None)
        if self.config.form == "auto" and stage.apply_condition and condition is not None:
            self.denoising_form.fill_(bool(condition.is_random))

    # --- routes -----------------------------------------------------------------------------
    def routes(self, available: torch.Tensor, utt_mask: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per utterance: source, level-1 target and level-2 target modalities, each (B, S, M)
        bool, from its availability pattern ``available`` (B, S, M) (module docstring)."""
        avail = available & utt_mask[..., None]
        missing = ~available & utt_mask[..., None]
        if bool(self.denoising_form):
            return avail, missing, torch.zeros_like(avail)
        M = avail.size(-1)
        first = torch.zeros_like(avail)
        found = torch.zeros_like(avail[..., 0])
        for j in self.order:                     # the first missing modality in ``order``
            first[..., j] = missing[..., j] & ~found
            found |= missing[..., j]
        source, target1, target2 = avail, first, missing & ~first
        # All available: the reference's order[0] -> order[1] -> order[2 ...].
        full = (avail.sum(-1) == M)[..., None]
        hot = torch.zeros(3, M, dtype=torch.bool, device=avail.device)
        hot[0, self.order[0]] = True
        hot[1, self.order[1:2]] = True
        hot[2, self.order[2:]] = True
        source = torch.where(full, hot[0], source)
        target1 = torch.where(full, hot[1], target1)
        target2 = torch.where(full, hot[2], target2)
        return source, target1, target2

    def slots(self, mods: torch.Tensor) -> torch.Tensor:
        """(B, S, M) bool per modality -> (B, S, D) bool per feature slot."""
        return mods.repeat_interleave(self.slot_sizes, dim=-1)

    def encode(self, values: torch.Tensor, mods: torch.Tensor, utt_mask: torch.Tensor,
               encoder: Encoder | None = None) -> torch.Tensor:
        """Encode the slots of ``mods`` (B, S, M) of ``values`` (B, S, D), the rest zero, plus
        the slot mask. -> (B, S, H)."""
        # masked_fill, not a product: values outside the slots never get in, even inf or NaN.
        inp = torch.cat([values.masked_fill(~self.slots(mods), 0.0), mods.to(values.dtype)], -1)
        return (encoder or self.encoder)(inp, utt_mask, self.config.context)

    def translate(self, batch: Batch, cycle: bool = True) -> dict[str, torch.Tensor]:
        """Every intermediate of a batch: ``source``, ``target1``, ``target2`` (B, S, M) bool;
        ``z1`` (B, S, H), ``y1`` (B, S, D) level-1 translation, ``back`` (B, S, D) its cycle
        back to the source (with ``cycle``), ``z2`` (B, S, H2), ``y2`` (B, S, D), ``pred``
        (B, S, n_outputs)."""
        mask, ctx = batch.utt_mask, self.config.context
        source, target1, target2 = self.routes(batch.available, mask)
        x = torch.cat([batch.x[m] for m in self.modalities], -1)              # (B, S, D)
        z1 = self.encode(x, source, mask)                                     # (B, S, H)
        z2 = self.encoder2(z1, mask, ctx)                                     # (B, S, H2)
        level2 = target2.any(-1, keepdim=True)                                # (B, S, 1)
        pred = torch.where(level2, self.head2(z2, mask, ctx), self.head1(z1, mask, ctx))
        out = {"source": source, "target1": target1, "target2": target2, "z1": z1, "z2": z2,
               "pred": pred}
        if cycle:
            y1 = self.decoder(z1)                                             # (B, S, D)
            out.update(y1=y1, back=self.decoder(self.encode(y1, target1, mask)),
                       y2=self.decoder2(z2))
        return out

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.translate(batch, cycle=False)["pred"]

    # --- losses -----------------------------------------------------------------------------
    def slot_mse(self, pred: torch.Tensor, x: torch.Tensor, mods: torch.Tensor) -> torch.Tensor:
        """MSE over the slots of ``mods`` (B, S, M): mean over each utterance's target
        dimensions, then over the utterances with any target. pred, x (B, S, D)."""
        slots = self.slots(mods)
        sq = (pred - x.masked_fill(~slots, 0.0)).pow(2).masked_fill(~slots, 0.0)
        n = slots.sum(-1)                                                      # (B, S)
        rows = (n > 0).to(sq.dtype)
        return (sq.sum(-1) / n.clamp(min=1) * rows).sum() / rows.sum().clamp(min=1)

    def task_term(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        if self.task == "regression" and self.config.regression_loss == "mae":
            mask = batch.utt_mask
            err = (pred[..., 0] - batch.labels.float()).abs().masked_fill(~mask, 0.0)
            return err.sum() / mask.sum().clamp(min=1)
        return task_loss(pred, batch, self.task)

    def stage_loss(self, batch: Batch, stage: Stage) -> tuple[torch.Tensor, dict[str, float]]:
        c, out = self.config, self.translate(batch)
        x = torch.cat([batch.x[m] for m in self.modalities], -1)
        held = batch.present & batch.utt_mask[..., None]
        translation = self.slot_mse(out["y1"], x, out["target1"] & held)
        # Cycle: back to the source, for utterances that had something to translate into.
        has_target = out["target1"].any(-1, keepdim=True)
        cycle = self.slot_mse(out["back"], x, out["source"] & held & has_target)
        translation2 = self.slot_mse(out["y2"], x, out["target2"] & held)
        task = self.task_term(out["pred"], batch)
        level2 = out["target2"].any(-1) & batch.utt_mask
        used = [h for h, on in ((self.head1, (~level2 & batch.utt_mask).any()),
                                (self.head2, level2.any())) if on]
        l2 = c.head_l2 * sum((h.out.weight.pow(2).sum() for h in used), x.new_zeros(()))
        loss = (c.translation_weight * translation + c.cycle_weight * cycle
                + c.translation2_weight * translation2 + c.task_weight * task + l2)
        parts = {"translation": translation, "cycle": cycle, "translation2": translation2,
                 "task": task, "l2": l2}
        return loss, {k: float(v.detach()) for k, v in parts.items()}

