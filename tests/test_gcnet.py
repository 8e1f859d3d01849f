"""GCNet: masks, graphs within a dialogue, the reference's graph formulas, loss parts, trainer."""
import copy
import math

import pytest
import torch

import hardymer.models.gcnet  # noqa: F401  (registration)
from hardymer.data.dataset import SequenceDataset
from hardymer.data.synthetic import generate
from hardymer.models import create_method
from hardymer.protocol import parse_condition
from hardymer.training.checkpoint import load_checkpoint, save_checkpoint
from hardymer.runs.config import load_run_config
from hardymer.runs.experiment import run_experiment

from conftest import make_toy

SMALL = dict(hidden=16, graph_hidden=8)


def small(ds, **kw):
    torch.manual_seed(0)
    return create_method("gcnet", ds.dims, ds.n_classes, ds.task, **{**SMALL, **kw})


def batch_of(ds, cond="atv", n=4):
    mask = parse_condition(cond, ds.modalities).mask(ds.available, ds.modalities)
    sds = SequenceDataset(ds, list(range(n)), mask)
    return sds.collate([sds[i] for i in range(n)])


def test_overfits_one_batch_and_both_loss_parts_fall(toy):
    m = small(toy, dropout=0.0)
    b = batch_of(toy, "at", n=3)  # v hidden but present: reconstruction has targets
    opt = m.configure_optimizer(3e-3, 0.0)
    stage = m.stages([1])[0]
    first = None
    for _ in range(200):
        loss, parts = m.stage_loss(b, stage)
        first = first or (float(loss.detach()), parts)
        opt.zero_grad(); loss.backward(); opt.step()
    assert set(parts) == {"task", "recon"}
    assert first[1]["recon"] > 0.1 and first[1]["task"] > 0.1
    assert float(loss.detach()) == pytest.approx(parts["task"] + parts["recon"], rel=1e-5)
    assert float(loss.detach()) < 0.05 * first[0]
    assert parts["task"] < 0.05 * first[1]["task"] and parts["recon"] < 0.05 * first[1]["recon"]


def test_reconstruction_loss_only_on_hidden_but_present_entries(toy):
    m = small(toy)
    b = batch_of(toy, "atv")
    rec = {k: torch.randn_like(v) for k, v in b.x.items()}
    assert float(m.reconstruction_loss(rec, b)) == 0.0          # nothing hidden
    b = batch_of(toy, "at")
    want = ((rec["v"] - b.x["v"]).pow(2).mean(-1)[b.utt_mask].sum() / b.utt_mask.sum())
    assert torch.allclose(m.reconstruction_loss(rec, b), want)  # the reference's normalisation


def test_missing_modality_values_do_not_matter(toy):
    m = small(toy).eval()
    b = batch_of(toy, "at")
    y1 = m(b)
    b.x["v"] = torch.randn_like(b.x["v"]) * 50
    assert torch.equal(y1, m(b))
    b.x["v"][:] = float("inf")
    assert torch.equal(y1, m(b))
    b.x["a"] = torch.randn_like(b.x["a"])  # available modality: must matter
    assert not torch.allclose(y1, m(b), atol=1e-3)


def test_prediction_uses_its_dialogue_only_and_padding_does_not_leak(toy):
    m = small(toy).eval()
    b = batch_of(toy, "atv")
    y1 = m(b)
    lengths = b.utt_mask.sum(1)
    assert lengths[0] >= 3 and (lengths < b.utt_mask.size(1)).any()
    # another utterance of the same dialogue changes utterance (0, 0)
    for x in b.x.values():
        x[0, 2] = torch.randn_like(x[0, 2])
    y2 = m(b)
    assert not torch.allclose(y1[0, 0], y2[0, 0], atol=1e-4)
    # another dialogue of the batch changes nothing in dialogue 0
    for x in b.x.values():
        x[1] = torch.randn_like(x[1])
    assert torch.equal(y2[0], m(b)[0])
    # padding values
    y3 = m(b)
    for x in b.x.values():
        x[~b.utt_mask] = 99.0
    assert torch.allclose(y3[b.utt_mask], m(b)[b.utt_mask], atol=1e-6)


def test_shuffling_the_dialogue_matters_shuffling_another_does_not(toy):
    """The issue's check, literally: reorder the *other* utterances of dialogue 0 (utterance 0
    stays first, its own features unchanged) and its prediction moves; reorder dialogue 1 and
    dialogue 0's predictions stay bit-identical."""
    m = small(toy).eval()
    b = batch_of(toy, "atv")
    y = m(b)
    g = torch.Generator().manual_seed(0)
    n0, n1 = (int(b.utt_mask[i].sum()) for i in (0, 1))
    perm0 = torch.cat([torch.zeros(1, dtype=torch.long), 1 + torch.randperm(n0 - 1, generator=g)])
    perm1 = torch.randperm(n1, generator=g)
    shuffled = copy.deepcopy(b)
    for m_ in shuffled.x:
        shuffled.x[m_][0, :n0] = b.x[m_][0, perm0]
    shuffled.speaker[0, :n0] = b.speaker[0, perm0]
    assert not torch.allclose(y[0, 0], m(shuffled)[0, 0], atol=1e-4)
    other = copy.deepcopy(b)
    for m_ in other.x:
        other.x[m_][1, :n1] = b.x[m_][1, perm1]
    other.speaker[1, :n1] = b.speaker[1, perm1]
    assert torch.equal(y[0], m(other)[0])


def test_speakers_matter_and_unknown_speakers_work(toy):
    m = small(toy).eval()
    b = batch_of(toy, "atv")
    y1 = m(b)
    b.speaker[b.utt_mask] = 1 - b.speaker[b.utt_mask]  # swap the two speakers
    assert not torch.allclose(y1, m(b), atol=1e-4)
    b.speaker[:] = -1                                    # unknown: its own speaker slot
    assert torch.isfinite(m(b)).all()
    _, speaker = m.graphs(b)
    k = m.n_speaker_slots
    assert speaker[:, (k - 1) * k + (k - 1)].sum() == speaker.sum() > 0


def test_graph_edges_window_dialogue_and_relations(toy):
    m = small(toy)
    b = batch_of(toy, "atv")
    temporal, speaker = m.graphs(b)
    B, S = b.utt_mask.shape
    assert temporal.shape == (B, 3, S, S) and speaker.shape == (B, 9, S, S)
    edges = temporal.sum(1)
    assert torch.equal(edges, speaker.sum(1)) and edges.max() == 1  # one relation per edge
    real = b.utt_mask
    assert edges[~(real[:, :, None] & real[:, None, :])].sum() == 0  # no edge touches padding
    i, j = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    inside = (real[:, :, None] & real[:, None, :]) & ((i - j).abs() <= 2)
    assert torch.equal(edges.bool(), inside)
    assert torch.equal(temporal[:, 0].bool(), inside & (j < i))   # past
    assert torch.equal(temporal[:, 1].bool(), inside & (j == i))  # self
    assert torch.equal(temporal[:, 2].bool(), inside & (j > i))   # future


def _reference_edges(length, speakers, window=2):
    """The reference's ``edge_perms`` + edge types (graph.py), as (source, target, type)."""
    out = []
    for src in range(length):
        for tgt in range(max(0, src - window), min(length, src + window + 1)):
            order = 0 if tgt > src else 1 if tgt == src else 2            # past, now, future
            out.append((src, tgt, order, int(speakers[tgt]) * 3 + int(speakers[src])))
    return out


def test_dense_graph_convs_match_the_edge_list_formulas(toy):
    """PyG RGCNConv (mean per relation + root + bias) and GraphConv (sum + root), by edges."""
    m = small(toy)
    b = batch_of(toy, "atv")
    torch.manual_seed(1)
    h = torch.randn(*b.utt_mask.shape, 2 * SMALL["hidden"])
    temporal, speaker = m.graphs(b)
    for branch, adj, col in ((m.temporal, temporal, 2), (m.speaker, speaker, 3)):
        dense1 = branch.conv1(h, adj)
        dense2 = branch.conv2(dense1, adj.amax(1))
        for d in range(len(h)):
            n = int(b.utt_mask[d].sum())
            x, edges = h[d, :n], _reference_edges(n, b.speaker[d, :n])
            c1 = x @ branch.conv1.root + branch.conv1.bias
            for r in range(adj.size(1)):
                for tgt in range(n):
                    src = [e[0] for e in edges if e[1] == tgt and e[col] == r]
                    if src:
                        c1[tgt] = c1[tgt] + x[src].mean(0) @ branch.conv1.weight[r]
            agg = torch.stack([sum(c1[e[0]] for e in edges if e[1] == tgt) for tgt in range(n)])
            c2 = branch.conv2.rel(agg) + branch.conv2.root(c1)
            assert torch.allclose(dense1[d, :n], c1, atol=1e-5)
            assert torch.allclose(dense2[d, :n], c2, atol=1e-4)


def test_save_reload_and_regression(toy, tmp_path):
    m = small(toy).eval()
    b = batch_of(toy)
    save_checkpoint(tmp_path / "ck", m, None, {"epoch": 1})
    m2 = create_method("gcnet", toy.dims, toy.n_classes, toy.task, **SMALL).eval()
    load_checkpoint(tmp_path / "ck", m2)
    assert torch.equal(m(b), m2(b))

    reg = make_toy(n_seq=6, task="regression")
    r = small(reg)
    rb = batch_of(reg, "tv")
    assert r(rb).shape == (*rb.utt_mask.shape, 1)
    loss, parts = r.stage_loss(rb, r.stages([1])[0])
    loss.backward()
    assert math.isfinite(parts["task"]) and parts["recon"] > 0


def test_presets_follow_the_reference():
    cfg = load_run_config("gcnet")
    assert cfg.model == dict(hidden=200, graph_hidden=100, window_past=2, window_future=2,
                             n_speakers=2, dropout=0.5, recon_weight=1.0)
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.weight_decay) == \
        ([100], 32, 1e-3, 1e-5)
    for family in ("mosi", "mosei"):
        assert load_run_config("gcnet", family).model["n_speakers"] == 1


def test_end_to_end_through_the_trainer(tmp_path):
    ds = generate("tiny", seed=0)
    cfg = load_run_config("gcnet", overrides=["train.epochs=[2]", "model.hidden=8",
                                              "model.graph_hidden=4", "train.batch_size=8"])
    conds = [parse_condition(c, ds.modalities) for c in ("at", "random:0.3")]
    records = run_experiment(cfg, ds, conds, [0], tmp_path, progress=False)
    assert [r["condition"] for r in records] == ["at", "random:0.3"]
    for r in records:
        assert r["method"] == "gcnet"
        assert all(math.isfinite(r[f"test_{k}"]) for k in ("WA", "UA", "F1"))
    assert (tmp_path / "fold0" / "at" / "result.json").is_file()
