"""MRAN-like — a reconstruction of MRAN (Multimodal Reconstruct and Align Net; Luo, Xu, Lai,
MMM 2023, LNCS 13833 pp. 411-422) from its abstract alone: no code is public and the chapter
could not be read here. The name says so in every run, report row and table.

The abstract names three parts, and this model is exactly those parts, per utterance:

1. **Multimodal Embedding + Missing Index Embedding guide the reconstruction.** Each modality
   becomes a token: ``Linear(d_m -> D)`` of its features when available, a learned mask token
   when not; a modality-type embedding and an embedding of the utterance's missing pattern
   (one of 2^M) are added to every token; a small Transformer encoder over the M tokens
   outputs every modality's representation h_m, and per-modality decoders ``Linear(D -> d_m)``
   reconstruct the missing ones (MSE on the hidden-but-present entries).
2. **Visual and acoustic features projected into the textual feature space**: linear maps
   ``P_m: D -> D`` for every non-text modality (text: identity).
3. **Text-centred alignment to the emotion category's word embedding**: every modality's
   text-space feature is pulled towards the embedding of the utterance's class,
   ``L_align = mean_m (1 - cos(P_m h_m, E_y))``; prediction = MLP over the concatenated
   text-space features, trained with the task loss.

Loss = ``task + rec_weight L_rec + align_weight L_align``.

Shapes: B sequences of S utterances (each utterance on its own: no context), M modalities,
D = ``hidden``.

Assumptions (the paper could not be read), each a choice of ours:

* Token Transformer: ``depth`` 2 layers, ``heads`` 4, D 128, dropout 0.1, post-norm
  ``nn.TransformerEncoderLayer`` with a 2D feed-forward; the abstract names no architecture.
* The missing modalities' tokens are the learned mask token plus the embeddings; the
  reconstructed representation h_m (not the decoded features) is what the classifier reads.
* Label embeddings E_c (D each) are learned: the paper aligns to word embeddings of the class
  names (GloVe in its likely lineage, Dai et al. 2020), which we cannot download at run time.
  Alignment is a cosine loss on every modality of every real utterance (available or
  reconstructed). For regression (CMU), the alignment classes are "negative" (y < 0) and
  "positive" (y > 0); y = 0 utterances are not aligned.
* Weights ``rec_weight`` 1.0 and ``align_weight`` 0.1; the training values (Adam, lr 2e-4,
  weight decay 1e-5, 60 epochs, batch 4 dialogues) are MMIN's preset, the line of work MRAN
  compares with.
* The "text" modality is ``text_modality`` ("t"); when the data has none, the first modality
  is the centre.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.dataset import Batch
from ..training.method import Method, Stage, task_loss
from .registry import register_method


@dataclass
class MRANLikeConfig:
    """Hyper-parameters; every value is an assumption (module docstring)."""

    hidden: int = 128          # D
    depth: int = 2             # Transformer layers over the M modality tokens
    heads: int = 4
    dropout: float = 0.1
    rec_weight: float = 1.0    # L_rec
    align_weight: float = 0.1  # L_align
    text_modality: str = "t"   # the centre of the alignment


@register_method("mran-like")
class MRANLike(Method):
    """Modality tokens with type and missing-pattern embeddings -> Transformer -> reconstruct
    the missing ones; project to the text space; align with label embeddings; classify.

    ``forward``: (B, S, n_outputs). ``represent``: h (B, S, M, D) in the text space.

    Examples
    --------
    >>> from hardymer.models import create_method
    >>> m = create_method("mran-like", dims={"a": 8, "t": 8, "v": 8}, n_outputs=4,
    ...                   task="classification", hidden=16, heads=2)
    >>> m.centre
    't'
    """

    Config = MRANLikeConfig
    published_as = "mran"    # the report shows MRAN's published figures beside this row

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        if config.hidden % config.heads:
            raise ValueError(f"model.hidden={config.hidden} is not a multiple of "
                             f"model.heads={config.heads}")

    def __init__(self, config: MRANLikeConfig, dims, n_outputs, task):
        super().__init__(config, dims, n_outputs, task)
        D, M = config.hidden, len(self.modalities)
        self.centre = (config.text_modality if config.text_modality in self.modalities
                       else self.modalities[0])
        self.embed = nn.ModuleDict({m: nn.Linear(d, D) for m, d in dims.items()})
        self.mask_token = nn.Parameter(torch.zeros(D))
        self.type_embedding = nn.Parameter(torch.randn(M, D) * 0.02)
        self.pattern_embedding = nn.Embedding(2 ** M, D)
        layer = nn.TransformerEncoderLayer(D, config.heads, 2 * D, config.dropout,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.depth, enable_nested_tensor=False)
        self.decoders = nn.ModuleDict({m: nn.Linear(D, d) for m, d in dims.items()})
        self.to_text = nn.ModuleDict({m: nn.Linear(D, D) for m in self.modalities
                                      if m != self.centre})
        n_labels = n_outputs if task == "classification" else 2
        self.label_embedding = nn.Parameter(torch.randn(n_labels, D))
        self.classifier = nn.Sequential(nn.Linear(M * D, D), nn.ReLU(), nn.Dropout(config.dropout),
                                        nn.Linear(D, n_outputs))

    def encode(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Transformer outputs h (N, M, D) of the N real utterances, and their rows' positions
        (N,) in the flattened (B*S) grid."""
        rows = batch.utt_mask.flatten().nonzero().squeeze(1)
        avail = batch.available.flatten(0, 1)[rows]                          # (N, M)
        tokens = torch.stack(
            [torch.where(avail[:, i, None], self.embed[m](
                batch.x[m].flatten(0, 1)[rows].masked_fill(~avail[:, i, None], 0.0)),
                self.mask_token)
             for i, m in enumerate(self.modalities)], dim=1)                 # (N, M, D)
        pattern = (avail.long() << torch.arange(avail.size(1), device=avail.device)).sum(1)
        tokens = tokens + self.type_embedding + self.pattern_embedding(pattern)[:, None]
        return self.encoder(tokens), rows

    def text_space(self, h: torch.Tensor) -> torch.Tensor:
        """(N, M, D) -> every modality's feature in the text space (N, M, D)."""
        return torch.stack([h[:, i] if m == self.centre else self.to_text[m](h[:, i])
                            for i, m in enumerate(self.modalities)], dim=1)

    def _grid(self, values: torch.Tensor, rows: torch.Tensor, batch: Batch) -> torch.Tensor:
        B, S = batch.utt_mask.shape
        out = values.new_zeros((B * S,) + values.shape[1:])
        return out.index_copy(0, rows, values).view(B, S, *values.shape[1:])

    def represent(self, batch: Batch) -> torch.Tensor:
        """Text-space features (B, S, M, D), zero at padding."""
        h, rows = self.encode(batch)
        return self._grid(self.text_space(h), rows, batch)

    def forward(self, batch: Batch) -> torch.Tensor:
        h, rows = self.encode(batch)
        return self._grid(self.classifier(self.text_space(h).flatten(1)), rows, batch)

    def stage_loss(self, batch: Batch, stage: Stage) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        h, rows = self.encode(batch)
        z = self.text_space(h)                                               # (N, M, D)
        task = task_loss(self._grid(self.classifier(z.flatten(1)), rows, batch), batch, self.task)
        # Reconstruction of what the model could not see but the data holds.
        target = (batch.present & ~batch.available).flatten(0, 1)[rows]      # (N, M)
        rec = z.new_zeros(())
        for i, m in enumerate(self.modalities):
            if target[:, i].any():
                x = batch.x[m].flatten(0, 1)[rows][target[:, i]]
                rec = rec + F.mse_loss(self.decoders[m](h[target[:, i], i]), x,
                                       reduction="sum") / x.size(1)
        rec = rec / max(int(target.sum()), 1)
        # Text-centred alignment with the class's label embedding.
        labels = batch.labels.flatten()[rows]
        if self.task == "classification":
            keep, cls = torch.ones_like(labels, dtype=torch.bool), labels.long()
        else:
            keep, cls = labels != 0, (labels > 0).long()
        if keep.any():
            cos = F.cosine_similarity(z[keep], self.label_embedding[cls[keep]][:, None], dim=-1)
            align = (1 - cos).mean()
        else:
            align = z.new_zeros(())
        loss = task + cfg.rec_weight * rec + cfg.align_weight * align
        return loss, {"task": float(task.detach()), "rec": float(rec.detach()),
                      "align": float(align.detach())}
