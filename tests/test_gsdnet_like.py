"""GSDNet-like (a reconstruction from the abstracts): the VE-SDE pieces against their closed
forms, the eigenvalue-only spectral SDE, every loss part, recovery of a hidden modality, the
dialogue as the graph's context, and deterministic evaluation."""
import copy
import math

import pytest
import torch

from hardymer.data.dataset import SequenceDataset
from hardymer.models import create_method
from hardymer.models.diffusion import (VESDE, diffusion_coeff, dsm_loss, euler_maruyama,
                                       marginal_std)
from hardymer.models.graph import masked_reconstruction_loss
from hardymer.models.gsdnet_like import spectral_basis, spectral_graph
from hardymer.protocol import parse_condition

from conftest import make_toy

SMALL = dict(hidden=16, graph_hidden=8, score_hidden=16, time_embed_dim=16, spectral_rank=4,
             sampling_steps=4)


def small(ds, **kw):
    torch.manual_seed(0)
    return create_method("gsdnet-like", ds.dims, ds.n_classes, ds.task, **{**SMALL, **kw})


def batch_of(ds, cond="atv", n=4, start=0):
    mask = parse_condition(cond, ds.modalities).mask(ds.available, ds.modalities)
    sds = SequenceDataset(ds, list(range(start, start + n)), mask)
    return sds.collate([sds[i] for i in range(n)])


# --- diffusion.py ------------------------------------------------------------------------------
def test_ve_sde_std_and_diffusion_coefficient_are_the_closed_forms():
    s = 25.0
    t = torch.tensor([0.0, 0.5, 1.0])
    want = [0.0, math.sqrt((s - 1) / (2 * math.log(s))), math.sqrt((s * s - 1) / (2 * math.log(s)))]
    assert torch.allclose(marginal_std(t, s), torch.tensor(want), atol=1e-5)
    assert torch.allclose(diffusion_coeff(t, s), torch.tensor([1.0, 5.0, 25.0]))
    sde = VESDE(s)
    assert torch.equal(sde.std(t), marginal_std(t, s)) and torch.equal(sde.g(t), diffusion_coeff(t, s))
    with pytest.raises(ValueError, match="sigma"):
        VESDE(1.0)


def test_sampler_is_deterministic_given_the_generator_and_takes_a_dict_state():
    sde = VESDE(25.0)
    score = lambda x, t: {k: -v / (1 + sde.std(t) ** 2) for k, v in x.items()}  # noqa: E731
    like = {"x": torch.zeros(5, 3), "lam": torch.zeros(5, 2)}
    run = lambda seed: euler_maruyama(score, like, sde, 10,  # noqa: E731
                                      generator=torch.Generator().manual_seed(seed))
    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(a[k], b[k]) for k in like)
    assert not torch.allclose(a["x"], c["x"])
    with pytest.raises(ValueError, match="steps"):
        euler_maruyama(score, like, sde, 1)


def test_sampler_with_the_exact_gaussian_score_reaches_the_targets_variance():
    sde = VESDE(25.0)
    for s0 in (0.5, 2.0):
        score = lambda x, t: -x / (s0 ** 2 + sde.std(t) ** 2)  # noqa: E731  N(0, s0^2) at t
        out = euler_maruyama(score, torch.zeros(20000, 1), sde, 100,
                             generator=torch.Generator().manual_seed(0))
        assert 0.85 < float(out.var()) / s0 ** 2 < 1.15 and abs(float(out.mean())) < 0.05 * s0


def test_dsm_loss_is_lower_for_the_exact_score_than_for_none():
    torch.manual_seed(0)
    sde = VESDE(25.0)
    x0 = torch.randn(4000, 3)
    exact = dsm_loss(lambda x, t, std: -x / (1 + std[:, None] ** 2), x0, sde)
    zero = dsm_loss(lambda x, t, std: torch.zeros_like(x), x0, sde)
    assert float(zero) == pytest.approx(3.0, rel=0.05)     # E||z||^2 = D
    assert float(exact) < 0.5 * float(zero)
    rows = torch.zeros(4000, dtype=torch.bool)
    assert float(dsm_loss(lambda x, t, std: x, x0, sde, rows=rows)) == 0.0


# --- the spectral part ---------------------------------------------------------------------------
def test_spectral_basis_is_the_top_k_of_each_dialogues_normalised_adjacency(toy):
    m = small(toy, spectral_rank=3)
    b = batch_of(toy)
    U, lam, slots = m.spectrum(b)
    edges = m.graphs(b)[0].amax(1)
    for i in range(b.utt_mask.size(0)):
        n = int(b.utt_mask[i].sum())
        a = ((edges[i, :n, :n] + edges[i, :n, :n].T) > 0).float()
        d = a.sum(1).rsqrt()
        norm = d[:, None] * a * d[None, :]
        k = min(3, n)
        assert torch.allclose(lam[i, :k], torch.linalg.eigvalsh(norm).flip(0)[:k], atol=1e-5)
        assert torch.allclose(norm @ U[i, :n, :k], U[i, :n, :k] * lam[i, :k], atol=1e-5)
        assert torch.allclose(U[i, :n, :k].T @ U[i, :n, :k], torch.eye(k), atol=1e-5)
        assert float(U[i, n:].abs().sum()) == 0.0 and int(slots[i].sum()) == k


def test_the_spectral_sde_perturbs_only_the_eigenvalues(toy):
    m = small(toy)
    b = batch_of(toy, "t")
    U, lam0, slots = m.spectrum(b)
    seen = []
    graph = m.score_graph
    m.score_graph = lambda *a: seen.append(graph(*a)) or seen[-1]
    m.dsm_losses(b)
    adj = seen[0]
    inner = U.transpose(1, 2) @ adj @ U                                # (B, k, k)
    diag = torch.diagonal(inner, dim1=1, dim2=2)
    assert torch.allclose(inner, torch.diag_embed(diag), atol=1e-5)   # U^T A_t U diagonal
    assert torch.allclose(adj, spectral_graph(U, diag), atol=1e-5)    # in U's span only
    assert not torch.allclose(diag, lam0, atol=1e-2)                  # the eigenvalues moved
    clean = small(toy, spectral_sde=False)
    seen.clear()
    graph = clean.score_graph
    clean.score_graph = lambda *a: seen.append(graph(*a)) or seen[-1]
    parts = clean.dsm_losses(b)
    assert torch.allclose(seen[0], spectral_graph(U, lam0), atol=1e-6)
    assert float(parts["dsm_spectral"]) == 0.0
    assert "_spectrum" not in clean.eval().sample(b) and "_spectrum" in m.eval().sample(b)


def test_spectral_basis_keeps_padding_apart():
    mask = torch.tensor([[True, True, False, False]])
    edges = torch.zeros(1, 4, 4)
    edges[0, :2, :2] = 1.0
    U, lam, slots = spectral_basis(edges, mask, 3)
    assert slots.tolist() == [[True, True, False]]
    assert float(U[0, 2:].abs().sum()) == 0.0 and float(U[0, :, 2].abs().sum()) == 0.0
    assert torch.allclose(lam[0], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)   # [[.5,.5],[.5,.5]]


# --- losses, recovery, context ----------------------------------------------------------------
def parts_at(m, b, seeds=(1, 2, 3, 4)):
    """The loss parts in eval mode (seeded sampler), the DSM draws seeded: averaged over
    ``seeds``, so that two calls compare the same noise."""
    m.eval()
    out = {}
    with torch.no_grad():
        for s in seeds:
            torch.manual_seed(s)
            for k, v in m.stage_loss(b, m.stages([1])[0])[1].items():
                out[k] = out.get(k, 0.0) + v / len(seeds)
    m.train()
    return out


def test_every_loss_part_exists_and_falls_on_one_batch(toy):
    m = small(toy, dropout=0.0)
    b = batch_of(toy, "random:0.5", n=3)
    assert all((b.present & ~b.available)[..., i][b.utt_mask].any() for i in range(3))
    first = parts_at(m, b)
    opt = m.configure_optimizer(1e-2, 0.0)
    for _ in range(40):
        loss, parts = m.stage_loss(b, m.stages([1])[0])
        opt.zero_grad(); loss.backward(); opt.step()
    assert set(parts) == {"task", "dsm_a", "dsm_t", "dsm_v", "dsm_spectral", "rec"}
    w = m.config.diffusion_weight
    assert float(loss.detach()) == pytest.approx(
        parts["task"] + w * sum(v for k, v in parts.items() if k != "task"), rel=1e-5)
    last = parts_at(m, b)
    for k in first:
        assert first[k] > 0 and last[k] < 0.8 * first[k], (k, first[k], last[k])


def test_the_recovered_modality_gets_closer_to_the_truth_than_untrained_and_zero_fill():
    ds = make_toy(strength=(1.5, 1.5, 3.0))   # v carries the class strongly: recoverable
    m = small(ds, dropout=0.0, sampling_steps=12)
    train = [batch_of(ds, "at", n=6, start=s) for s in (0, 6, 12)]
    test = batch_of(ds, "at", n=6, start=20)
    target = test.utt_mask

    def error():
        with torch.no_grad():
            rec = m.eval().complete(test)[1]["v"]
        m.train()
        return float((rec - test.x["v"]).pow(2).mean(-1)[target].mean())
    before = error()
    zero_fill = float(test.x["v"].pow(2).mean(-1)[target].mean())
    # The recovery part of the objective only (the backbone plays no part in it).
    opt = torch.optim.Adam([*m.feature_scores.parameters(), *m.spectrum_score.parameters(),
                            *m.refiners.parameters()], lr=1e-2)
    for _ in range(15):
        for b in train:
            loss = sum(m.dsm_losses(b).values()) + masked_reconstruction_loss(m.complete(b)[0], b)
            opt.zero_grad(); loss.backward(); opt.step()
    after = error()
    assert after < 0.5 * before and after < 0.8 * zero_fill, (before, after, zero_fill)


def shuffle_dialogue(b, i, perm):
    out = copy.deepcopy(b)
    n = len(perm)
    for k in out.x:
        out.x[k][i, :n] = b.x[k][i, perm]
    out.speaker[i, :n] = b.speaker[i, perm]
    out.available[i, :n] = b.available[i, perm]
    return out


def test_recovery_uses_the_dialogue_and_not_the_other_dialogues(toy):
    m = small(toy).eval()
    b = batch_of(toy, "at")
    with torch.no_grad():
        y, rec = m(b), m.complete(b)[1]["v"]
    g = torch.Generator().manual_seed(0)
    n0, n1 = (int(b.utt_mask[i].sum()) for i in (0, 1))
    perm0 = torch.cat([torch.zeros(1, dtype=torch.long), 1 + torch.randperm(n0 - 1, generator=g)])
    shuffled = shuffle_dialogue(b, 0, perm0)
    with torch.no_grad():
        assert not torch.allclose(rec[0, 0], m.complete(shuffled)[1]["v"][0, 0], atol=1e-4)
        assert not torch.allclose(y[0, 0], m(shuffled)[0, 0], atol=1e-4)
    other = copy.deepcopy(b)
    for k in other.x:
        other.x[k][1, :n1] = torch.randn_like(other.x[k][1, :n1])
    other.available[1, :n1, 0] = False                   # another mask there too
    with torch.no_grad():
        assert torch.equal(rec[0], m.complete(other)[1]["v"][0])
        assert torch.equal(y[0], m(other)[0])


def test_hidden_values_even_inf_and_padding_do_not_matter_and_eval_is_deterministic(toy):
    m = small(toy).eval()
    b = batch_of(toy, "random:0.5")
    y = m(b)
    assert torch.equal(y, m(b)) and torch.equal(y, small(toy).eval()(b))
    hidden = copy.deepcopy(b)
    for i, k in enumerate(hidden.x):
        hidden.x[k][~b.available[..., i]] = float("inf")
    assert torch.equal(y[b.utt_mask], m(hidden)[b.utt_mask])
    pad = copy.deepcopy(b)
    for x in pad.x.values():
        x[~b.utt_mask] = 99.0
    assert torch.allclose(y[b.utt_mask], m(pad)[b.utt_mask], atol=1e-5)
    assert not torch.equal(m.train()(b), m(b))            # training draws fresh noise


def test_regression_runs_and_choices_are_checked():
    ds = make_toy(task="regression")
    m = small(ds)
    b = batch_of(ds, "random:0.5")
    loss, parts = m.stage_loss(b, m.stages([1])[0])
    loss.backward()
    assert m(b).shape == b.labels.shape + (1,) and parts["rec"] > 0 and parts["dsm_spectral"] > 0
    cfg = type(m.config)
    for bad, field in ((dict(base_model="transformer"), "base_model"),
                       (dict(sampling_steps=1), "sampling_steps"), (dict(sigma=1.0), "sigma"),
                       (dict(sample_eps=0.0), "sample_eps"), (dict(spectral_rank=0), "spectral_rank")):
        with pytest.raises(ValueError, match=f"model.{field}"):
            type(m).check_config(cfg(**bad))
