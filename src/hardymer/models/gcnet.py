"""GCNet — Graph Completion Network (Lian, Chen, Sun, Liu, Tao, TPAMI 2023; code
``zeroQiaoba/GCNet``, ``gcnet/model.py``, ``graph.py``, ``loss.py``, ``train_gcnet.py``).

The utterances of a dialogue are the nodes of two graphs. Each utterance's input is the
concatenation ``[x_a; x_t; x_v]`` with every modality that ``batch.available`` hides set to zero;
a 2-layer BiLSTM reads the dialogue; then two branches run on its output ``h``:

* temporal graph: edges between utterances at most ``window_past`` before / ``window_future``
  after each other, self loops included, relation = past / self / future (3 relations);
* speaker graph: the same edges, relation = (speaker of the receiving utterance, speaker of the
  sending one), ``K**2`` relations;

each branch = relational GCN (mean over the neighbours of each relation, plus a root term) ->
graph conv (sum over all neighbours, plus a root term; no activation between the two) ->
``[h; g]`` -> 2-layer BiLSTM -> Linear -> ReLU. The two branches are summed; one linear head
classifies (or regresses, 1 output), another reconstructs all three modalities. Loss = masked
task loss (CE, or MSE for regression) + ``recon_weight`` x the reference's reconstruction MSE:
squared error of the reconstructed features, mean over each modality's dimensions, summed over
the (utterance, modality) entries the model could not see but the data holds
(``present & ~available``), divided by the number of real utterances.

Shapes: B dialogues of at most S utterances; D_e = ``hidden``, G = ``graph_hidden``,
D_h = 2 D_e + G; R relations.

Deviations from the reference, all deliberate:

* Graph convolutions are dense PyTorch ops on padded ``(B, R, S, S)`` adjacency masks, not
  torch_geometric; the formulas are those of PyG's ``RGCNConv`` (``aggr="mean"``, root weight,
  bias) and ``GraphConv`` (``aggr="add"``). Edges never cross dialogues nor touch padding.
* Both BiLSTMs run on packed sequences: the reference runs them over zero padding, so its
  backward direction starts in the padding of shorter dialogues.
* Speakers: the reference maps IEMOCAP's genders to fixed ids (F 0, M 1) and asserts at most two
  speakers; ``batch.speaker`` numbers speakers by first turn in the dialogue. Ids ``0 ..
  n_speakers-1`` keep their own slot; unknown speakers (-1) *and* any id >= ``n_speakers`` share
  one extra slot, so K = ``n_speakers + 1`` and the speaker graph has ``K**2`` relations
  (the reference: ``n_speakers**2``).
* The reference names its window bounds for the *sending* node (PyG's source -> target flow);
  ours bound the neighbours of the receiving node. The two agree at the published 2 / 2.
* The missing-modality mask is owned by our protocol: fixed conditions, or ``random:p`` redrawn
  each training epoch and fixed for evaluation. The reference draws a fresh random mask (CPM-Net
  style, at least one modality kept) for every batch, in evaluation too.
* Only the published configuration: LSTM base model, no nodal attention (``--time-attn`` off in
  the README's runs), reconstruction loss on (``--loss-recon``), reconstructions not fed back
  to the classifier (``--reccls-flag`` off).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.dataset import Batch
from ..training.method import Method, Stage, task_loss
from .graph import (DialogueGraphs, GraphConv, RelationalGraphConv, masked_reconstruction_loss,
                    packed_rnn, zero_filled)
from .registry import register_method


@dataclass
class GCNetConfig:
    """Hyper-parameters; defaults are the reference's IEMOCAP run (README, ``run.sh``)."""

    hidden: int = 200          # D_e, first BiLSTM's size per direction (--hidden)
    graph_hidden: int = 100    # G = hidden // 2 in the reference's build_model
    window_past: int = 2       # --windowp; -1: every earlier utterance
    window_future: int = 2     # --windowf; -1: every later utterance
    n_speakers: int = 2        # IEMOCAP 2, CMU 1 (train_gcnet.py); + 1 slot for unknown
    dropout: float = 0.5       # between the layers of both BiLSTMs (the reference's only dropout)
    recon_weight: float = 1.0  # lambda: the reference adds the two losses (--loss-recon)


class GraphBranch(nn.Module):
    """RGCN -> GraphConv -> concat with the input -> BiLSTM -> Linear -> ReLU.
    (B, S, 2 D_e) -> (B, S, D_h); the reference's ``GraphNetwork`` without nodal attention."""

    def __init__(self, d_in: int, d_graph: int, n_relations: int, dropout: float):
        super().__init__()
        d_h = d_in + d_graph
        self.conv1 = RelationalGraphConv(d_in, d_graph, n_relations)
        self.conv2 = GraphConv(d_graph, d_graph)
        self.lstm = nn.LSTM(d_h, d_h, num_layers=2, bidirectional=True, dropout=dropout,
                            batch_first=True)
        self.out = nn.Linear(2 * d_h, d_h)

    def forward(self, h: torch.Tensor, adj: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        g = self.conv2(self.conv1(h, adj), adj.amax(1))
        return F.relu(self.out(packed_rnn(self.lstm, torch.cat([h, g], -1), lengths)))


@register_method("gcnet")
class GCNet(DialogueGraphs, Method):
    """Zero-filled inputs -> BiLSTM -> temporal + speaker graph branches -> class / recon heads.

    ``forward``: (B, S, n_outputs). ``reconstruct``: dict of (B, S, dim_m).
    """

    Config = GCNetConfig

    def __init__(self, config: GCNetConfig, dims, n_outputs, task):
        super().__init__(config, dims, n_outputs, task)
        d_in, d_e = sum(dims.values()), config.hidden
        d_h = 2 * d_e + config.graph_hidden
        self.n_speaker_slots = config.n_speakers + 1
        self.lstm = nn.LSTM(d_in, d_e, num_layers=2, bidirectional=True, dropout=config.dropout,
                            batch_first=True)
        self.temporal = GraphBranch(2 * d_e, config.graph_hidden, 3, config.dropout)
        self.speaker = GraphBranch(2 * d_e, config.graph_hidden, self.n_speaker_slots ** 2,
                                   config.dropout)
        self.classifier = nn.Linear(d_h, n_outputs)
        self.reconstructor = nn.Linear(d_h, d_in)

    def encode(self, batch: Batch) -> torch.Tensor:
        """Fused utterance representations (B, S, D_h) from the available modalities only."""
        x = zero_filled(batch)
        lengths = batch.utt_mask.sum(1)
        h = packed_rnn(self.lstm, x, lengths)                   # (B, S, 2 D_e)
        temporal, speaker = self.graphs(batch)
        return self.temporal(h, temporal, lengths) + self.speaker(h, speaker, lengths)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.classifier(self.encode(batch))

    def reconstruct(self, hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstructed features per modality from (B, S, D_h)."""
        parts = self.reconstructor(hidden).split(list(self.dims.values()), dim=-1)
        return dict(zip(self.modalities, parts))

    def reconstruction_loss(self, rec: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        """The reference's ``MaskedReconLoss`` (:func:`masked_reconstruction_loss`)."""
        return masked_reconstruction_loss(rec, batch)

    def stage_loss(self, batch: Batch, stage: Stage) -> tuple[torch.Tensor, dict[str, float]]:
        hidden = self.encode(batch)
        task = task_loss(self.classifier(hidden), batch, self.task)
        recon = self.reconstruction_loss(self.reconstruct(hidden), batch)
        loss = task + self.config.recon_weight * recon
        return loss, {"task": float(task.detach()), "recon": float(recon.detach())}
