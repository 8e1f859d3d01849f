"""The MMIN family (MMIN, IF-MMIN, CIF-MMIN): losses, masks, the two stages, imagination."""
import json

import pytest
import torch

from hardymer.models import create_method
from hardymer.training.method import Stage
from hardymer.models.cif_mmin import contrastive
from hardymer.models.if_mmin import cmd
from hardymer.models.imagination import flat
from hardymer.protocol import make_folds, parse_condition
from hardymer.runs.config import load_run_config
from hardymer.runs.experiment import build_method, run_experiment
from hardymer.training.loaders import FoldData
from hardymer.training.trainer import Trainer

from test_methods import batch_of

FAMILY = ["mmin", "if-mmin", "cif-mmin"]
SMALL = dict(embd_size=16, ae_layers=[24, 12, 8], n_blocks=2, cls_layers=[16])
PRETRAIN, IMAGINE = Stage("pretrain", 1, False, False), Stage("imagine", 1)


def small(name, ds, **kw):
    torch.manual_seed(0)
    return create_method(name, ds.dims, ds.n_classes, ds.task, **{**SMALL, **kw})


@pytest.mark.parametrize("name", FAMILY)
def test_overfits_one_batch_with_every_loss_term(name, toy):
    m = small(name, toy, dropout=0.0, pretrain_dropout=0.0)
    b = batch_of(toy, "at", n=3)
    opt = m.configure_optimizer(3e-3, 0.0)
    m.on_epoch_start(1, IMAGINE, None)
    with torch.no_grad():  # stage-2 copies away from stage 1, so every term has work to do
        for _, new in m.stage2_pairs():
            for p in new.parameters():
                p.add_(0.3 * torch.randn_like(p))
    first = None
    for _ in range(300):
        loss, parts = m.stage_loss(b, IMAGINE)
        first = first or parts
        opt.zero_grad(); loss.backward(); opt.step()
    assert parts["task"] < 0.05 * first["task"]
    extra = {"mmin": "cycle", "if-mmin": "invariant", "cif-mmin": "consistent"}[name]
    assert {"task", "imagination", extra} <= set(parts)
    assert parts["imagination"] < first["imagination"] and parts[extra] < first[extra]


@pytest.mark.parametrize("name", FAMILY)
def test_hidden_modality_values_do_not_matter(name, toy):
    m = small(name, toy).eval()
    b = batch_of(toy, "at")
    y = m(b)
    b.x["v"] = torch.randn_like(b.x["v"]) * 50
    assert torch.allclose(y, m(b), atol=1e-5)
    b.x["t"] = torch.randn_like(b.x["t"])
    assert not torch.allclose(y, m(b), atol=1e-3)


@pytest.mark.parametrize("name", FAMILY)
def test_stage2_starts_from_stage1_encoders_once(name, toy):
    m = small(name, toy)
    pairs = m.stage2_pairs()
    assert not any(torch.equal(p.state_dict()[k], n.state_dict()[k])
                   for p, n in pairs for k in p.state_dict() if k.endswith("weight"))
    m.on_epoch_start(1, PRETRAIN, None)
    assert not bool(m.stage2_initialised)
    m.on_epoch_start(2, IMAGINE, None)
    for pre, new in pairs:
        assert all(torch.equal(v, new.state_dict()[k]) for k, v in pre.state_dict().items())
    with torch.no_grad():                                   # stage-2 training moves them apart
        next(iter(pairs[0][1].parameters())).add_(1.0)
    m.on_epoch_start(3, IMAGINE, None)                      # no second copy (e.g. after resume)
    assert not torch.equal(next(iter(pairs[0][0].parameters())),
                           next(iter(pairs[0][1].parameters())))


def test_pretrain_sees_every_modality_and_trains_only_stage1_parts(toy):
    m = small("if-mmin", toy)
    b = batch_of(toy, "at")                                 # even a conditioned batch
    loss, parts = m.stage_loss(b, PRETRAIN)
    assert set(parts) == {"task", "cmd"}
    loss.backward()
    assert all(p.grad is None for p in m.enc.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.pre_enc["v"].parameters())


def test_imagination_moves_towards_the_true_missing_embedding(toy):
    """MMIN's mechanism: the imagined video block approaches the frozen stage-1 embedding of
    the true (hidden) video features as stage 2 trains."""
    m = small("mmin", toy, dropout=0.0)
    opt = m.configure_optimizer(2e-3, 0.0)
    b = batch_of(toy, "at", n=8)
    for _ in range(100):                                    # stage 1: a full-modality model
        loss, _ = m.stage_loss(batch_of(toy, "atv", n=8), PRETRAIN)
        opt.zero_grad(); loss.backward(); opt.step()
    m.on_epoch_start(1, IMAGINE, None)
    v = slice(2 * 16, 3 * 16)                               # the video block of h'

    def distance():
        with torch.no_grad():
            x, avail, present = flat(b)
            target, _ = m.imagination_targets(x, avail, present)
            return float((m.imagine(x, avail)["recon"][:, v] - target[:, v]).pow(2).mean())
    before = distance()
    for _ in range(150):
        loss, _ = m.stage_loss(b, IMAGINE)
        opt.zero_grad(); loss.backward(); opt.step()
    assert distance() < 0.5 * before


def test_pattern_training_draws_incomplete_patterns(toy):
    m = small("mmin", toy, pattern_training=True)
    b = batch_of(toy, "atv", n=6)
    torch.manual_seed(1)
    avail = m.stage2_available(b)[b.utt_mask]
    assert (avail.sum(-1) >= 1).all() and (avail.sum(-1) <= 2).all()   # never full, never empty
    assert len({tuple(r.tolist()) for r in avail}) == 6
    m.eval()
    assert torch.equal(m.stage2_available(b), b.available)            # evaluation: the condition


def test_cmd_and_contrastive_losses():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=g)
    assert float(cmd(x, x)) == 0.0
    assert float(cmd(x, x + 1.0)) > float(cmd(x, x + 0.1)) > 0.0
    assert float(cmd(x, 2 * x)) > 0.0                       # same mean, other moments
    y = torch.randn(32, 8, generator=g)
    scale = torch.tensor(5.0)
    aligned = contrastive(y, y + 0.01 * torch.randn(32, 8, generator=g), scale)
    shuffled = contrastive(y, y[torch.randperm(32, generator=g)], scale)
    assert float(aligned) < float(shuffled)


@pytest.mark.parametrize("name", FAMILY)
def test_trains_under_both_protocols_and_resumes(name, toy, tmp_path):
    """Fixed condition and random missing rate through the shared trainer; stage 1 is shared
    across conditions; the stage's Adam β1 is applied; a re-run reads results back."""
    cfg = load_run_config(name, "iemocap", ["train.epochs=[2,2]", "train.batch_size=8",
                                            "model.embd_size=16", "model.ae_layers=[16,8]",
                                            "model.n_blocks=2", "model.cls_layers=[16]"])
    conds = [parse_condition(c, toy.modalities) for c in ("at", "random:0.3")]
    recs = run_experiment(cfg, toy, conds, [0], tmp_path, progress=False)
    assert [r["condition"] for r in recs] == ["at", "random:0.3"]
    assert all(0.0 <= r["test_WA"] <= 1.0 for r in recs)
    assert (tmp_path / "fold0" / "_shared" / "pretrain" / "last.json").is_file()
    last = json.loads((tmp_path / "fold0" / "at" / "last.json").read_text())
    assert all(g["betas"][0] == 0.5 for g in last["optimizer"]["param_groups"])
    shared = json.loads((tmp_path / "fold0" / "_shared" / "pretrain" / "last.json").read_text())
    assert all(g["betas"][0] == 0.9 for g in shared["optimizer"]["param_groups"])
    assert run_experiment(cfg, toy, conds, [0], tmp_path, progress=False) == recs


def test_shared_stage1_equals_one_uninterrupted_run(toy, tmp_path):
    cfg = load_run_config("mmin", "iemocap", ["train.epochs=[2,2]", "train.batch_size=8",
                                              "model.embd_size=16", "model.n_blocks=2"])
    fold, cond = make_folds(toy)[1], parse_condition("av", toy.modalities)
    alone = Trainer(cfg.train, None, progress=False).fit(
        build_method(cfg, toy), FoldData(toy, fold, cond, cfg.train.seed))
    (rec,) = run_experiment(cfg, toy, [cond], [1], tmp_path, progress=False)
    assert rec["test_WA"] == alone.test["WA"]


def test_regression_task(toy):
    from conftest import make_toy
    ds = make_toy(task="regression")
    for name in FAMILY:
        m = small(name, ds)
        assert m(batch_of(ds, "t")).shape[-1] == 1
        loss, _ = m.stage_loss(batch_of(ds, "t"), IMAGINE)
        assert torch.isfinite(loss)
