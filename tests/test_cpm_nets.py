"""CPM-Nets: latent table, structured hinge, test-time latent fitting, reload without attach."""
import math

import numpy as np
import pytest
import torch

import hardymer.models.cpm_nets  # noqa: F401  (registration)
from conftest import make_toy
from hardymer.data.dataset import SequenceDataset
from hardymer.data.synthetic import generate
from hardymer.runs.evaluate import evaluate_run
from hardymer.models import create_method
from hardymer.training.method import Stage
from hardymer.models.cpm_nets import structured_hinge
from hardymer.protocol import make_folds, parse_condition
from hardymer.training.checkpoint import load_checkpoint, save_checkpoint
from hardymer.runs.config import load_run_config
from hardymer.runs.experiment import run_experiment
from hardymer.training.loaders import FoldData

SMALL = dict(latent_dim=32, test_steps=40, test_lr=1e-2)
STAGE = Stage("train", 1)


def small(ds, **kw):
    torch.manual_seed(0)
    return create_method("cpm-nets", ds.dims, ds.n_classes, ds.task, **{**SMALL, **kw})


def fold_data(ds, cond="atv"):
    return FoldData(ds, make_folds(ds)[0], parse_condition(cond, ds.modalities), seed=0)


def attached(ds, cond="atv", **kw):
    m = small(ds, **kw)
    m.attach(None, fold_data(ds, cond), None)
    return m


def batch_of(ds, cond="atv", seqs=range(4)):
    mask = parse_condition(cond, ds.modalities).mask(ds.available, ds.modalities)
    sds = SequenceDataset(ds, list(seqs), mask)
    return sds.collate([sds[i] for i in range(len(sds))])


def train_batch(ds, cond="atv"):
    """All training sequences of fold 0 in one batch (the reference's full batch)."""
    data = fold_data(ds, cond)
    return batch_of(ds, cond, data.fold.train)


def run_steps(m, b, n, lr=1e-3):
    opt = m.configure_optimizer(lr, 0.0)
    history = []
    for _ in range(n):
        loss, parts = m.stage_loss(b, STAGE)
        history.append({"loss": float(loss.detach()), **parts})
        opt.zero_grad(); loss.backward(); opt.step()
    return history


def test_hinge_matches_the_definition():
    torch.manual_seed(1)
    h, y = torch.randn(9, 5), torch.tensor([0, 0, 1, 1, 1, 2, 2, 0, 3])  # class 3: a singleton
    want = 0.0
    for n in range(9):
        means = {k: np.mean([float(h[n] @ h[j]) for j in range(9) if j != n and y[j] == k])
                 for k in range(4) if any(j != n and y[j] == k for j in range(9))}
        if int(y[n]) not in means:
            continue  # no other latent of its class: skipped
        pred = max(means, key=means.get)
        want += max(0.0, float(pred != int(y[n])) + means[pred] - means[int(y[n])])
    assert float(structured_hinge(h, y, 4)) == pytest.approx(want, rel=1e-5)
    assert want > 0


def test_overfits_one_batch(toy):
    m = attached(toy)
    hist = run_steps(m, batch_of(toy, "atv", range(3)), 300)
    assert hist[-1]["loss"] < 0.05 * hist[0]["loss"]


def test_missing_modality_values_do_not_matter(toy):
    m = attached(toy, "at")
    run_steps(m, train_batch(toy, "at"), 20)
    m.eval()
    b = batch_of(toy, "at")
    y1 = m(b)
    b.x["v"] = torch.randn_like(b.x["v"]) * 50  # hidden: any values
    assert torch.equal(y1, m(b))
    b.x["a"] = torch.randn_like(b.x["a"])       # available: must matter
    assert not torch.allclose(y1, m(b), atol=1e-3)


def test_test_time_fit_reconstructs_and_leaves_model_alone(toy):
    m = attached(toy, "at")
    run_steps(m, train_batch(toy, "at"), 30)
    m.eval().zero_grad(set_to_none=True)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    b = batch_of(toy, "at", range(20, 26))
    real = b.utt_mask

    def err(steps):
        h = m.fit_latents(b, steps)
        with torch.no_grad():
            return float(m.reconstruction_error(h, b)[real].mean())

    e0, e10, e100 = err(0), err(10), err(100)
    assert e100 < e10 < e0
    out = m(b)
    assert torch.equal(out, m(b))               # deterministic: same batch, same output
    after = m.state_dict()
    for k, v in before.items():                 # decoders, table and centres bit-identical
        assert torch.equal(v, after[k]), k
    assert all(p.grad is None for p in m.parameters())


def test_fit_of_an_utterance_does_not_depend_on_its_batch(toy):
    m = attached(toy).eval()
    alone = m(batch_of(toy, "atv", [5]))
    together = m(batch_of(toy, "atv", [3, 4, 5]))
    n = alone.shape[1]
    assert torch.allclose(alone[0, :n], together[2, :n], atol=1e-6)


def test_hinge_and_reconstruction_both_decrease(toy):
    m = attached(toy)
    hist = run_steps(m, train_batch(toy), 60)
    assert set(hist[0]) == {"loss", "recon", "hinge"}
    for part in ("recon", "hinge"):
        assert hist[-1][part] < 0.5 * hist[0][part], part


def test_centres_are_refreshed_on_eval_and_classify_training_latents(toy):
    m = attached(toy)
    b = train_batch(toy)
    run_steps(m, b, 60)
    stale = m.centres.clone()
    m.eval()
    assert not torch.equal(stale, m.centres)
    keep = m.train_class >= 0
    want = torch.stack([m.latents[keep][m.train_class[keep] == k].mean(0) for k in range(4)])
    assert torch.allclose(m.centres, want, atol=1e-5)
    m.train()
    pred = m(b).argmax(-1)                      # table latents vs centres (the reference's ave)
    acc = (pred == b.labels)[b.utt_mask].float().mean()
    assert acc > 0.9


def test_regression_uses_sign_classes_and_a_head():
    ds = make_toy(task="regression")
    m = attached(ds)
    assert m._hinge_classes(torch.tensor([-0.4, 0.0, 2.0])).tolist() == [0, -1, 1]
    assert (m.train_class[m.train_class >= 0] == (torch.as_tensor(ds.labels) > 0)[
        m.train_class >= 0].long()).all()
    b = train_batch(ds)
    hist = run_steps(m, b, 150)
    assert set(hist[0]) == {"loss", "recon", "hinge", "mse"}
    assert hist[-1]["mse"] < 0.1 * hist[0]["mse"]
    out = m(b)[b.utt_mask][:, 0]
    assert np.corrcoef(out.detach().numpy(), b.labels[b.utt_mask].numpy())[0, 1] > 0.9
    test = m.eval()(batch_of(ds, "at", range(20, 24)))
    assert test.shape[-1] == 1 and torch.isfinite(test).all()


def test_save_and_reload_without_attach(toy, tmp_path):
    m = attached(toy, "at")
    b = train_batch(toy, "at")
    opt = m.configure_optimizer(1e-3, 0.0)
    for _ in range(10):
        loss, _ = m.stage_loss(b, STAGE)
        opt.zero_grad(); loss.backward(); opt.step()
    m.eval()
    save_checkpoint(tmp_path / "ck", m, opt, {"epoch": 1})
    fresh = create_method("cpm-nets", toy.dims, toy.n_classes, toy.task, **SMALL)
    assert fresh.latents.shape[0] == 0
    load_checkpoint(tmp_path / "ck", fresh)
    assert fresh.latents.shape == m.latents.shape
    test = batch_of(toy, "at", range(20, 25))
    assert torch.equal(m(test), fresh.eval()(test))
    with pytest.raises(RuntimeError, match="attach"):
        create_method("cpm-nets", toy.dims, toy.n_classes, toy.task, **SMALL).stage_loss(b, STAGE)


def test_end_to_end_trainer_and_evaluate(tmp_path):
    ds = generate("tiny", seed=0)
    cfg = load_run_config("cpm-nets", overrides=[
        "train.epochs=[4]", "model.latent_dim=16", "model.test_steps=20", "model.test_lr=1e-2"])
    conds = [parse_condition(c, ds.modalities) for c in ("at", "random:0.3")]
    records = run_experiment(cfg, ds, conds, [0], tmp_path, progress=False)
    assert {r["condition"] for r in records} == {"at", "random:0.3"}
    for r in records:
        assert all(math.isfinite(r[f"test_{k}"]) for k in ("WA", "UA", "F1"))
    res = evaluate_run(tmp_path, opener=lambda source: ds)
    assert all(math.isfinite(res[k]) for k in ("WA", "UA", "F1"))
    by_cond = {c["condition"]: c["metrics"] for c in res["per_fold"]}
    for r in records:                           # reloaded without attach: same test metrics
        assert by_cond[r["condition"]]["WA"] == pytest.approx(r["test_WA"])
