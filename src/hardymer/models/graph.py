"""Dialogue-graph layers shared by the graph methods (GCNet, SDR-GNN): dense adjacency of the
utterances of each dialogue, PyG's ``RGCNConv`` / ``GraphConv`` formulas as dense ops, packed
recurrent layers, and SDR-GNN's spectral filters (hypergraph smoothing, signed gated
propagation) and branch. Edges never cross dialogues nor touch padding.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..data.dataset import Batch


def zero_filled(batch: Batch) -> torch.Tensor:
    """``[x_a; x_t; x_v]`` (B, S, D_in) with every modality ``batch.available`` hides at zero
    (masked_fill, not a product: hidden values never get in, even inf or NaN)."""
    return torch.cat([batch.x[m].masked_fill(~batch.available[..., i, None], 0.0)
                      for i, m in enumerate(batch.modalities)], dim=-1)


class DialogueGraphs:
    """Mixin of the graph methods: ``graphs(batch)`` from ``config.window_past``,
    ``config.window_future`` and ``self.n_speaker_slots``."""

    def graphs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Temporal (B, 3, S, S) and speaker (B, K*K, S, S) adjacency (:func:`dialogue_graphs`)."""
        cfg = self.config
        return dialogue_graphs(batch.utt_mask, batch.speaker, cfg.window_past, cfg.window_future,
                               self.n_speaker_slots)


def dialogue_graphs(utt_mask: torch.Tensor, speaker: torch.Tensor, window_past: int,
                    window_future: int, n_speaker_slots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Temporal (B, 3, S, S) and speaker (B, K*K, S, S) adjacency, [b, r, i, j] = edge j -> i.

    Edges join real utterances (``utt_mask`` (B, S)) of one dialogue at most ``window_past``
    before / ``window_future`` after each other (-1: no bound), self loops included. Temporal
    relation = past / self / future; speaker relation = (receiver's, sender's) speaker slot,
    with ids outside ``0 .. K-2`` (unknown, -1, or too many speakers) sharing slot K-1.
    """
    pos = torch.arange(utt_mask.size(1), device=utt_mask.device)
    offset = pos[None, :] - pos[:, None]                   # (S, S): j - i
    window = torch.ones_like(offset, dtype=torch.bool)
    if window_past >= 0:
        window &= offset >= -window_past
    if window_future >= 0:
        window &= offset <= window_future
    edges = (window[None] & utt_mask[:, :, None] & utt_mask[:, None, :]).float()  # (B, S, S)

    when = (offset.sign() + 1).expand_as(edges)             # 0 past, 1 self, 2 future
    temporal = F.one_hot(when, 3).permute(0, 3, 1, 2) * edges[:, None]

    k = n_speaker_slots
    spk = torch.where((speaker >= 0) & (speaker < k - 1), speaker, torch.full_like(speaker, k - 1))
    pair = spk[:, :, None] * k + spk[:, None, :]            # (receiver, sender)
    speaker_adj = F.one_hot(pair, k * k).permute(0, 3, 1, 2) * edges[:, None]
    return temporal.float(), speaker_adj.float()


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


def packed_rnn(rnn: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Run a batch-first LSTM or GRU on (B, S, D) sequences of these lengths; zeros at padding."""
    packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True,
                                  enforce_sorted=False)
    out, _ = rnn(packed)
    return pad_packed_sequence(out, batch_first=True, total_length=x.size(1))[0]


def masked_reconstruction_loss(rec: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
    """GCNet's ``MaskedReconLoss`` (SDR-GNN's too): squared error of each reconstructed modality
    ``rec[m]`` (B, S, d_m), mean over its dimensions, summed over the (utterance, modality)
    entries the model could not see but the data holds (``present & ~available``), divided by
    the number of real utterances."""
    target = batch.present & ~batch.available & batch.utt_mask[..., None]   # (B, S, M)
    total = sum((rec[m] - batch.x[m]).pow(2).mean(-1).masked_fill(~target[..., i], 0.0).sum()
                for i, m in enumerate(batch.modalities))
    return total / batch.utt_mask.sum().clamp(min=1)


class HypergraphSmoothing(nn.Module):
    """``X' = LeakyReLU(D^-1 H B^-1 H^T X + b)`` with hyperedge i = the nodes that send to i."""

    def __init__(self, d: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(d))   # zeros(self.bias) in the reference

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """x (B, S, D), adj (B, S, S) 0/1 with adj[b, i, j] = edge j -> i -> (B, S, D)."""
        edge = adj @ x / adj.sum(-1, keepdim=True).clamp(min=1)                  # B^-1 H^T X
        node = adj.transpose(1, 2) @ edge / adj.sum(1)[..., None].clamp(min=1)  # D^-1 H (.)
        return F.leaky_relu(node + self.bias)      # torch.nn.LeakyReLU(): slope 0.01


class SignedGatedConv(nn.Module):
    """``x'_i = sum_j d_i^-1/2 d_j^-1/2 tanh(w.[x_i; x_j] + b) x_j`` (the reference's
    ``highConv``); no weight matrix, no residual."""

    def __init__(self, d: int):
        super().__init__()
        self.gate = nn.Linear(2 * d, 1)

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, D) -> tanh gates (B, S, S), [b, i, j] for the message j -> i."""
        d = x.size(-1)
        w, b = self.gate.weight[0], self.gate.bias[0]
        return torch.tanh((x @ w[:d])[..., :, None] + (x @ w[d:])[..., None, :] + b)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        sent = adj.sum(1)                                                  # (B, S) edges sent
        inv = sent.clamp(min=1).rsqrt() * (sent > 0)
        norm = inv[:, :, None] * inv[:, None, :] * adj
        return (norm * self.gates(x)) @ x


class SpectralBranch(nn.Module):
    """SDR-GNN's branch: RGCN -> hypergraph smoothing -> signed gated conv -> ``[h; g]`` ->
    BiGRU (or BiLSTM) -> Linear -> ReLU. (B, S, D_in) -> (B, S, D_in + D_graph); the reference's
    ``GraphNetwork`` without nodal attention."""

    def __init__(self, d_in: int, d_graph: int, n_relations: int, base_model: str = "gru",
                 dropout: float = 0.5):
        super().__init__()
        d_h = d_in + d_graph
        self.conv1 = RelationalGraphConv(d_in, d_graph, n_relations)
        self.hypergraph = HypergraphSmoothing(d_graph)
        self.high_conv = SignedGatedConv(d_graph)
        rnn = nn.GRU if base_model == "gru" else nn.LSTM
        self.rnn = rnn(d_h, d_h, num_layers=2, bidirectional=True, dropout=dropout,
                       batch_first=True)
        self.out = nn.Linear(2 * d_h, d_h)

    def forward(self, h: torch.Tensor, adj: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        edges = adj.amax(1)
        g = self.high_conv(self.hypergraph(self.conv1(h, adj), edges), edges)
        return F.relu(self.out(packed_rnn(self.rnn, torch.cat([h, g], -1), lengths)))


class SpectralEncoder(DialogueGraphs):
    """Mixin of SDR-GNN's backbone (used by ``sdr-gnn`` and ``gsdnet-like``): a 2-layer
    bidirectional GRU/LSTM over the dialogue, then the temporal and speaker
    :class:`SpectralBranch` es, summed. Reads ``config.hidden``, ``graph_hidden``,
    ``n_speakers``, ``base_model``, ``dropout`` and the windows."""

    def build_encoder(self, d_in: int) -> None:
        cfg = self.config
        self.n_speaker_slots = cfg.n_speakers + 1
        rnn = nn.GRU if cfg.base_model == "gru" else nn.LSTM
        self.rnn = rnn(d_in, cfg.hidden, num_layers=2, bidirectional=True, dropout=cfg.dropout,
                       batch_first=True)
        branch = dict(base_model=cfg.base_model, dropout=cfg.dropout)
        self.temporal = SpectralBranch(2 * cfg.hidden, cfg.graph_hidden, 3, **branch)
        self.speaker = SpectralBranch(2 * cfg.hidden, cfg.graph_hidden,
                                      self.n_speaker_slots ** 2, **branch)

    def encode_dialogues(self, x: torch.Tensor, batch: Batch) -> torch.Tensor:
        """x (B, S, D_in) -> fused utterance representations (B, S, 2 D_e + G)."""
        lengths = batch.utt_mask.sum(1)
        h = packed_rnn(self.rnn, x, lengths)                                # (B, S, 2 D_e)
        temporal, speaker = self.graphs(batch)
        return self.temporal(h, temporal, lengths) + self.speaker(h, speaker, lengths)
