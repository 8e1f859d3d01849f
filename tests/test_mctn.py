"""MCTN: routes per pattern, loss parts, cyclic translation, masks, forms, regression."""
from types import SimpleNamespace

import pytest
import torch

import hardymer.models.mctn  # noqa: F401  (registration)
from hardymer.data.dataset import SequenceDataset
from hardymer.models import create_method
from hardymer.protocol import parse_condition
from hardymer.runs.config import load_run_config
from hardymer.training.checkpoint import load_checkpoint, save_checkpoint
from hardymer.training.method import Stage, task_loss

from conftest import make_toy

INCOMPLETE = ("a", "t", "v", "at", "av", "tv")
STAGE = Stage("train", 1)


def small(ds, **kw):
    torch.manual_seed(0)
    return create_method("mctn", ds.dims, ds.n_classes, ds.task, **kw)


def batch_of(ds, cond="atv", seqs=range(4), seed=0):
    mask = parse_condition(cond, ds.modalities).mask(ds.available, ds.modalities, seed=seed)
    sds = SequenceDataset(ds, list(seqs), mask)
    return sds.collate([sds[i] for i in range(len(sds))])


def onehot(mods, ds):
    return [m in mods for m in ds.modalities]


def test_routes_follow_the_hierarchy(toy):
    m = small(toy)
    cases = {"a": ("a", "t", "v"), "t": ("t", "a", "v"), "v": ("v", "t", "a"),
             "at": ("at", "v", ""), "av": ("av", "t", ""), "tv": ("tv", "a", ""),
             "atv": ("t", "a", "v")}          # all three: the reference's t -> a -> v
    for cond, want in cases.items():
        b = batch_of(toy, cond)
        routes = m.routes(b.available, b.utt_mask)
        for got, mods in zip(routes, want):
            assert torch.equal(got[b.utt_mask], torch.tensor(onehot(mods, toy)).expand(
                int(b.utt_mask.sum()), -1)), (cond, mods)
            assert not got[~b.utt_mask].any()
    # {a}: level 1 translates into t, level 2 (from the level-1 code) into v
    out = m.translate(batch_of(toy, "a"))
    assert out["y1"].shape[-1] == sum(toy.dims.values()) and out["z2"].shape[-1] == 32
    # the denoising form: source = what is available, target = all that is hidden, no level 2
    m.denoising_form.fill_(True)
    b = batch_of(toy, "random:0.5")
    src, t1, t2 = m.routes(b.available, b.utt_mask)
    assert torch.equal(src, b.available) and torch.equal(t1, ~b.available & b.utt_mask[..., None])
    assert not t2.any()


def test_loss_parts_exist_and_each_falls_on_one_batch(toy):
    m = small(toy)
    b = batch_of(toy, "a", seqs=range(3))   # every term active: a -> t, cycle, code -> v
    opt = m.configure_optimizer(3e-3, 0.0)
    first = None
    for _ in range(200):
        loss, parts = m.stage_loss(b, STAGE)
        first = first or (float(loss.detach()), parts)
        opt.zero_grad(); loss.backward(); opt.step()
    assert set(parts) == {"translation", "cycle", "translation2", "task", "l2"}
    w = m.config
    assert float(loss.detach()) == pytest.approx(
        w.translation_weight * parts["translation"] + w.cycle_weight * parts["cycle"]
        + w.translation2_weight * parts["translation2"] + parts["task"] + parts["l2"], rel=1e-5)
    assert float(loss.detach()) < 0.1 * first[0]
    for k in ("translation", "cycle", "translation2", "task"):
        assert first[1][k] > 0.5 and parts[k] < 0.25 * first[1][k], k
    assert parts["l2"] > 0   # the head's L2 penalty (grows as the head fits)


def test_translation_and_cycle_improve_on_held_out_dialogues(toy):
    m = small(toy)
    train, test = batch_of(toy, "at", seqs=range(20)), batch_of(toy, "at", seqs=range(20, 30))
    opt = m.configure_optimizer(1e-2, 0.0)

    def held_out():
        with torch.no_grad():
            return m.stage_loss(test, STAGE)[1]
    before = held_out()
    for _ in range(60):
        loss, _ = m.stage_loss(train, STAGE)
        opt.zero_grad(); loss.backward(); opt.step()
    after = held_out()
    assert after["translation"] < 0.8 * before["translation"]   # a, t -> v generalises
    assert after["cycle"] < 0.8 * before["cycle"]               # v' -> a, t reconstruction
    assert before["translation2"] == after["translation2"] == 0.0  # two available: no level 2


@pytest.mark.parametrize("context", [False, True])
def test_hidden_values_never_matter(toy, context):
    m = small(toy, context=context).eval()
    for cond in INCOMPLETE + ("random:0.5",):
        b = batch_of(toy, cond, seed=3)
        y = m(b)
        for i, mod in enumerate(toy.modalities):
            b.x[mod] = b.x[mod].masked_fill(~b.available[..., i, None], float("inf"))
        y_inf = m(b)
        assert torch.isfinite(y_inf[b.utt_mask]).all(), cond
        assert torch.equal(y[b.utt_mask], y_inf[b.utt_mask]), cond
        _, parts = m.stage_loss(batch_of(toy, cond, seed=3), STAGE)
        assert all(torch.isfinite(torch.tensor(v)) for v in parts.values()), cond


def test_complete_condition_reads_text_only_as_the_reference(toy):
    m = small(toy).eval()
    b = batch_of(toy, "atv")
    y = m(b)
    for mod in ("a", "v"):              # translation targets in training, unread at test
        b.x[mod] = torch.randn_like(b.x[mod]) * 10
    assert torch.equal(y, m(b))
    b.x["t"] = torch.randn_like(b.x["t"])
    assert not torch.allclose(y[b.utt_mask], m(b)[b.utt_mask], atol=1e-4)
    # the denoising form reads every available modality
    m.denoising_form.fill_(True)
    y = m(b)
    b.x["a"] = torch.randn_like(b.x["a"])
    assert not torch.allclose(y[b.utt_mask], m(b)[b.utt_mask], atol=1e-4)


def test_auto_form_follows_the_training_condition_and_is_saved(toy, tmp_path):
    m = small(toy)
    for cond, denoising in (("random:0.3", True), ("at", False), ("random:0.5", True)):
        data = SimpleNamespace(condition=parse_condition(cond, toy.modalities))
        m.on_epoch_start(1, STAGE, data)
        assert bool(m.denoising_form) is denoising
    m.on_epoch_start(1, Stage("pre", 1, apply_condition=False), SimpleNamespace(
        condition=parse_condition("at", toy.modalities)))
    assert bool(m.denoising_form)          # unconditioned stages leave it alone
    save_checkpoint(tmp_path / "ck", m.eval(), None, {"epoch": 1})
    again = small(toy).eval()
    load_checkpoint(tmp_path / "ck", again)
    assert bool(again.denoising_form)
    b = batch_of(toy, "at")
    assert torch.equal(m(b), again(b))
    fixed = small(toy, form="hierarchical")
    fixed.on_epoch_start(1, STAGE, SimpleNamespace(condition=parse_condition(
        "random:0.5", toy.modalities)))
    assert not bool(fixed.denoising_form)


def test_a_hierarchical_model_runs_on_mixed_patterns(toy):
    m = small(toy)                          # trained on "a" ...
    opt = m.configure_optimizer(3e-3, 0.0)
    b = batch_of(toy, "a", seqs=range(6))
    for _ in range(5):
        loss, _ = m.stage_loss(b, STAGE)
        opt.zero_grad(); loss.backward(); opt.step()
    mixed = batch_of(toy, "random:0.5", seqs=range(10))   # ... evaluated on every pattern
    patterns = {tuple(r.tolist()) for r in mixed.available[mixed.utt_mask]}
    assert len(patterns) >= 4
    y = m.eval()(mixed)
    assert torch.isfinite(y[mixed.utt_mask]).all()
    loss, parts = m.train().stage_loss(mixed, STAGE)
    assert torch.isfinite(loss) and parts["translation2"] > 0 and parts["cycle"] > 0
    # each utterance is routed by its own pattern: its prediction is that of its pattern alone
    rows = mixed.available[0, 0]
    one = mixed.with_available(torch.zeros_like(mixed.available) | rows)
    pick = (mixed.available == rows).all(-1) & mixed.utt_mask
    assert torch.allclose(m.eval()(one)[pick], y[pick], atol=1e-6)


def test_regression_mae_by_default_and_mse_on_request():
    ds = make_toy(task="regression")
    m = small(ds)
    assert ds.task == "regression" and m.head1.out.out_features == 1
    b = batch_of(ds, "tv")
    pred = m(b)
    _, parts = m.stage_loss(b, STAGE)
    mae = (pred[..., 0] - b.labels)[b.utt_mask].abs().mean()
    assert parts["task"] == pytest.approx(float(mae), rel=1e-5)
    mse = small(ds, regression_loss="mse")
    _, parts = mse.stage_loss(b, STAGE)
    assert parts["task"] == pytest.approx(float(task_loss(mse(b), b, "regression")), rel=1e-5)
    opt = m.configure_optimizer(3e-3, 0.0)
    first = None
    for _ in range(100):
        loss, parts = m.stage_loss(b, STAGE)
        first = first or parts["task"]
        opt.zero_grad(); loss.backward(); opt.step()
    assert parts["task"] < 0.5 * first
    cfg = load_run_config("mctn", "mosi")
    assert cfg.model["regression_loss"] == "mae" and cfg.train.patience == 20


def test_reference_tanh_output_bounds_translations(toy):
    b = batch_of(toy, "a")
    out = small(toy, reference_tanh_output=True).translate(b)
    assert out["y1"].abs().max() <= 1 and out["y2"].abs().max() <= 1
    assert small(toy).translate(b)["y1"].abs().max() > 0   # linear by default


def test_config_choices_are_checked():
    for key, bad in (("form", "cyclic"), ("regression_loss", "huber"), ("head_l2", -1),
                     ("order", "[t,t,a]")):
        with pytest.raises(ValueError, match=f"model.{key}"):
            load_run_config("mctn", "iemocap", [f"model.{key}={bad}"])
    cfg = load_run_config("mctn", "iemocap")
    assert cfg.model["hidden"] == 32 and cfg.train.lr == 1e-4 and cfg.train.epochs == [200]


def test_one_step_cells_equal_torch_lstms_on_one_step(toy):
    from hardymer.models.mctn import Decoder, Encoder
    torch.manual_seed(0)
    x, mask = torch.randn(3, 5, 7), torch.ones(3, 5, dtype=torch.bool)
    enc = Encoder(7, 4)
    out = enc.lstm(x.reshape(15, 1, 7))[0].view(3, 5, 2, 4).sum(2)   # directions summed
    assert torch.allclose(enc(x, mask, context=False), out, atol=1e-6)
    dec = Decoder(7, 6, 0.0, tanh_output=False)
    h, _ = dec.cell(x.reshape(15, 7))
    assert torch.allclose(dec(x), dec.out(h).view(3, 5, 6), atol=1e-6)
    # context: each utterance's code depends on its dialogue's other utterances
    y = enc(x, mask, context=True)
    x2 = x.clone(); x2[:, 0] += 1
    assert not torch.allclose(y[:, 1], enc(x2, mask, context=True)[:, 1])
