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

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..data.dataset import Batch
from ..training.method import Method, Stage, task_loss
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


class RelationalGraphConv(nn.Module):
    """``x'_i = W_root x_i + b + sum_r mean_{j in N_r(i)} W_r x_j`` (Schlichtkrull et al.)."""

    def __init__(self, d_in: int, d_out: int, n_relations: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_relations, d_in, d_out))
        self.root = nn.Parameter(torch.empty(d_in, d_out))
        self.bias = nn.Parameter(torch.zeros(d_out))
        bound = math.sqrt(6.0 / (d_in + d_out))  # glorot, as PyG initialises RGCNConv
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.root, -bound, bound)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """x (B, S, D_in), adj (B, R, S, S) with adj[b, r, i, j] = 1 for an edge j -> i of
        relation r  ->  (B, S, D_out)."""
        mean = adj / adj.sum(-1, keepdim=True).clamp(min=1)
        msg = mean @ x.unsqueeze(1)                                        # (B, R, S, D_in)
        return torch.einsum("brsd,rde->bse", msg, self.weight) + x @ self.root + self.bias


class GraphConv(nn.Module):
    """``x'_i = W_1 x_i + W_2 sum_{j in N(i)} x_j + b`` (Morris et al.; PyG ``GraphConv``)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.rel = nn.Linear(d_in, d_out)
        self.root = nn.Linear(d_in, d_out, bias=False)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """x (B, S, D_in), adj (B, S, S) 0/1 over every relation -> (B, S, D_out)."""
        return self.rel(adj @ x) + self.root(x)


def packed_lstm(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Run a batch-first LSTM on (B, S, D) sequences of these lengths; zeros at padding."""
    packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True,
                                  enforce_sorted=False)
    out, _ = lstm(packed)
    return pad_packed_sequence(out, batch_first=True, total_length=x.size(1))[0]


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
        return F.relu(self.out(packed_lstm(self.lstm, torch.cat([h, g], -1), lengths)))


@register_method("gcnet")
class GCNet(Method):
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

    def graphs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Temporal (B, 3, S, S) and speaker (B, K*K, S, S) adjacency, [b, r, i, j] = edge j -> i.

        Edges join real utterances of one dialogue within the window (self loops included).
        """
        cfg, mask = self.config, batch.utt_mask
        pos = torch.arange(mask.size(1), device=mask.device)
        offset = pos[None, :] - pos[:, None]                   # (S, S): j - i
        window = torch.ones_like(offset, dtype=torch.bool)
        if cfg.window_past >= 0:
            window &= offset >= -cfg.window_past
        if cfg.window_future >= 0:
            window &= offset <= cfg.window_future
        edges = (window[None] & mask[:, :, None] & mask[:, None, :]).float()  # (B, S, S)

        when = (offset.sign() + 1).expand_as(edges)             # 0 past, 1 self, 2 future
        temporal = F.one_hot(when, 3).permute(0, 3, 1, 2) * edges[:, None]

        k = self.n_speaker_slots
        spk = batch.speaker
        spk = torch.where((spk >= 0) & (spk < k - 1), spk, torch.full_like(spk, k - 1))
        pair = spk[:, :, None] * k + spk[:, None, :]            # (receiver, sender)
        speaker = F.one_hot(pair, k * k).permute(0, 3, 1, 2) * edges[:, None]
        return temporal.float(), speaker.float()

    def encode(self, batch: Batch) -> torch.Tensor:
        """Fused utterance representations (B, S, D_h) from the available modalities only."""
        # masked_fill, not a product: hidden values never get in, even inf or NaN.
        x = torch.cat([batch.x[m].masked_fill(~batch.available[..., i, None], 0.0)
                       for i, m in enumerate(self.modalities)], dim=-1)
        lengths = batch.utt_mask.sum(1)
        h = packed_lstm(self.lstm, x, lengths)                   # (B, S, 2 D_e)
        temporal, speaker = self.graphs(batch)
        return self.temporal(h, temporal, lengths) + self.speaker(h, speaker, lengths)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.classifier(self.encode(batch))

    def reconstruct(self, hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstructed features per modality from (B, S, D_h)."""
        parts = self.reconstructor(hidden).split(list(self.dims.values()), dim=-1)
        return dict(zip(self.modalities, parts))

    def reconstruction_loss(self, rec: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        """The reference's ``MaskedReconLoss``: per-entry MSE over each modality's dimensions,
        summed over the hidden-but-present (utterance, modality) entries, / real utterances."""
        target = batch.present & ~batch.available & batch.utt_mask[..., None]   # (B, S, M)
        total = sum((rec[m] - batch.x[m]).pow(2).mean(-1).masked_fill(~target[..., i], 0.0).sum()
                    for i, m in enumerate(self.modalities))
        return total / batch.utt_mask.sum().clamp(min=1)

    def stage_loss(self, batch: Batch, stage: Stage) -> tuple[torch.Tensor, dict[str, float]]:
        hidden = self.encode(batch)
        task = task_loss(self.classifier(hidden), batch, self.task)
        recon = self.reconstruction_loss(self.reconstruct(hidden), batch)
        loss = task + self.config.recon_weight * recon
        return loss, {"task": float(task.detach()), "recon": float(recon.detach())}
