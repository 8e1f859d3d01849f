"""SDR-GNN: the reference's filter formulas edge by edge, loss parts, the dialogue as context,
and the released cross-batch attention by name."""
import copy

import pytest
import torch

from hardymer.data.dataset import SequenceDataset
from hardymer.models import create_method
from hardymer.models.graph import HypergraphSmoothing, SignedGatedConv
from hardymer.protocol import parse_condition

from conftest import make_toy

SMALL = dict(hidden=16, graph_hidden=8)


def small(ds, **kw):
    torch.manual_seed(0)
    return create_method("sdr-gnn", ds.dims, ds.n_classes, ds.task, **{**SMALL, **kw})


def batch_of(ds, cond="atv", n=4):
    mask = parse_condition(cond, ds.modalities).mask(ds.available, ds.modalities)
    sds = SequenceDataset(ds, list(range(n)), mask)
    return sds.collate([sds[i] for i in range(n)])


def edge_list(adj):
    """(source j, target i) pairs of a (S, S) adjacency with adj[i, j] = edge j -> i."""
    return [(int(j), int(i)) for i, j in adj.nonzero()]


def test_hypergraph_layer_is_the_references_node_edge_node_mean(toy):
    m = small(toy)
    b = batch_of(toy)
    adj = m.graphs(b)[0].amax(1)[0]                      # dialogue 0, every relation
    n = int(b.utt_mask[0].sum())
    x = torch.randn(1, adj.size(0), 5)
    layer = HypergraphSmoothing(5)
    with torch.no_grad():
        layer.bias.normal_()
    got = layer(x, adj[None])[0]
    # PyG HypergraphConv with hyperedge_index = edge_index: row 0 nodes, row 1 hyperedges.
    edges = edge_list(adj)
    members = {e: [v for v, h in edges if h == e] for e in range(n)}
    hyper = {e: x[0, members[e]].mean(0) for e in range(n)}
    for v in range(n):
        incident = [h for u, h in edges if u == v]
        want = torch.nn.functional.leaky_relu(
            torch.stack([hyper[h] for h in incident]).mean(0) + layer.bias)
        assert torch.allclose(got[v], want, atol=1e-5)
    assert torch.equal(got[n:], torch.nn.functional.leaky_relu(layer.bias).expand_as(got[n:]))


def test_signed_gated_conv_is_the_references_high_conv(toy):
    m = small(toy)
    b = batch_of(toy)
    adj = m.graphs(b)[0].amax(1)[0]
    n = int(b.utt_mask[0].sum())
    x = torch.randn(1, adj.size(0), 5)
    layer = SignedGatedConv(5)
    got = layer(x, adj[None])[0]
    edges = edge_list(adj)
    deg = torch.zeros(adj.size(0))
    for j, _ in edges:
        deg[j] += 1                                      # degree(row): edges each node sends
    want = torch.zeros(adj.size(0), 5)
    for j, i in edges:                                   # message x_j -> i
        gate = torch.tanh(layer.gate(torch.cat([x[0, i], x[0, j]])))
        want[i] += deg[j] ** -0.5 * deg[i] ** -0.5 * gate * x[0, j]
    assert torch.allclose(got, want, atol=1e-5)
    assert float(got[n:].abs().sum()) == 0.0
    gates = layer.gates(x)
    assert (gates > 0).any() or (gates < 0).any()


def test_overfits_one_batch_and_both_loss_parts_fall(toy):
    m = small(toy, dropout=0.0)
    b = batch_of(toy, "t", n=3)   # a and v hidden but present: reconstruction has targets
    opt = m.configure_optimizer(3e-3, 0.0)
    first = None
    for _ in range(200):
        loss, parts = m.stage_loss(b, m.stages([1])[0])
        first = first or (float(loss.detach()), parts)
        opt.zero_grad(); loss.backward(); opt.step()
    assert set(parts) == {"task", "recon"}
    assert float(loss.detach()) == pytest.approx(0.5 * parts["task"] + 0.5 * parts["recon"],
                                                 rel=1e-5)
    assert parts["task"] < 0.05 * first[1]["task"] and parts["recon"] < 0.5 * first[1]["recon"]


def test_shuffling_the_dialogue_matters_shuffling_another_does_not(toy):
    m = small(toy).eval()
    b = batch_of(toy, "av")
    y = m(b)
    g = torch.Generator().manual_seed(0)
    n0, n1 = (int(b.utt_mask[i].sum()) for i in (0, 1))
    perm0 = torch.cat([torch.zeros(1, dtype=torch.long), 1 + torch.randperm(n0 - 1, generator=g)])
    shuffled = copy.deepcopy(b)
    for k in shuffled.x:
        shuffled.x[k][0, :n0] = b.x[k][0, perm0]
    shuffled.speaker[0, :n0] = b.speaker[0, perm0]
    assert not torch.allclose(y[0, 0], m(shuffled)[0, 0], atol=1e-4)
    other = copy.deepcopy(b)
    perm1 = torch.randperm(n1, generator=g)
    for k in other.x:
        other.x[k][1, :n1] = b.x[k][1, perm1]
    other.speaker[1, :n1] = b.speaker[1, perm1]
    assert torch.equal(y[0], m(other)[0])


def test_reconstruction_attends_within_the_dialogue_unless_the_reference_form_is_asked(toy):
    b = batch_of(toy, "a")
    changed = copy.deepcopy(b)
    for k in changed.x:
        changed.x[k][1] = torch.randn_like(changed.x[k][1])
    changed.available[1] = b.available[1]
    for reference, moves in ((False, False), (True, True)):
        m = small(toy, reference_batch_attention=reference).eval()
        with torch.no_grad():
            r0 = m.reconstruct(m.encode(b), b.utt_mask)["t"][0]
            r1 = m.reconstruct(m.encode(changed), changed.utt_mask)["t"][0]
        real = b.utt_mask[0]
        assert torch.allclose(r0[real], r1[real], atol=1e-5) != moves, reference
        assert torch.equal(m(b)[0], m(changed)[0])      # predictions never depend on it


def test_head_count_divides_the_width_and_regression_runs():
    ds = make_toy(task="regression")
    m = small(ds)
    assert m.rec_attention.num_heads == 22 and sum(ds.dims.values()) == 22
    assert create_method("sdr-gnn", {"a": 512, "t": 1024, "v": 1024}, 4,
                         "classification", hidden=8, graph_hidden=4).rec_attention.num_heads == 256
    b = batch_of(ds, "tv")
    loss, parts = m.stage_loss(b, m.stages([1])[0])
    loss.backward()
    assert m(b).shape == b.labels.shape + (1,) and parts["recon"] > 0
    with pytest.raises(ValueError, match="model.base_model"):
        type(m).check_config(type(m.config)(base_model="transformer"))
