"""``train.precision=bfloat16``: training steps under autocast, everything else float32."""
import warnings

import pytest
import torch

import hardymer.training.trainer as trainer_module

from hardymer.protocol import make_folds, parse_condition
from hardymer.runs.config import load_run_config
from hardymer.runs.experiment import build_method
from hardymer.training.loaders import FoldData
from hardymer.training.trainer import Trainer

from test_methods import ALL, batch_of, small

FAST = ["train.epochs=[2,2]", "model.hidden=16", "model.depth=1", "train.lr=1e-3",
        "train.batch_size=8", "model.dropout=0.0"]


@pytest.mark.parametrize("name", ALL)
def test_every_method_trains_under_bfloat16_autocast(name, toy):
    """Each stage's loss is finite under autocast and its gradients land, finite, on the
    float32 weights (no op of any method lacks a bf16 path or breaks the graph)."""
    m = small(name, toy)
    cond = parse_condition("at", toy.modalities)
    m.attach(None, FoldData(toy, make_folds(toy)[0], cond, seed=0), None)   # CPM-Nets' table
    b = batch_of(toy, "at", n=3)
    for stage in m.stages([1] * len(m.stage_names)):
        if name == "primd" and stage.name == m.stage_names[-1]:
            continue                       # distils from a trained teacher (test_primd.py)
        m.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, parts = m.stage_loss(b, stage)
        assert torch.isfinite(loss), (stage.name, parts)
        loss.backward()
        grads = [p.grad for p in m.parameters() if p.grad is not None]
        assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all()
                             for g in grads), stage.name


@pytest.mark.filterwarnings("ignore:train.precision=bfloat16 on a device")
def test_bfloat16_changes_training_only_and_stays_close(toy):
    """Same seed: the bf16 run's training losses differ from float32's (so autocast is on),
    by little; its weights and evaluation are float32."""
    data = FoldData(toy, make_folds(toy)[0], parse_condition("at", toy.modalities), seed=0)
    runs = {}
    for precision in ("float32", "bfloat16"):
        cfg = load_run_config("momke", "iemocap", FAST + [f"train.precision={precision}"])
        method = build_method(cfg, toy)
        runs[precision] = (Trainer(cfg.train, None, progress=False).fit(method, data), method)
    (f32, _), (b16, method) = runs["float32"], runs["bfloat16"]
    l32 = [r["train_loss"] for r in f32.history]
    l16 = [r["train_loss"] for r in b16.history]
    assert l16 != l32
    assert l16 == pytest.approx(l32, rel=0.05)
    assert all(p.dtype == torch.float32 for p in method.parameters())
    assert method.eval()(batch_of(toy, "at")).dtype == torch.float32
    assert abs(b16.val["WA"] - f32.val["WA"]) < 0.15


def test_precision_is_checked():
    with pytest.raises(ValueError, match="train.precision.*float32, bfloat16"):
        load_run_config("momke", "iemocap", ["train.precision=fp16"])


@pytest.mark.parametrize("form", ["weights", "views"])
def test_hardymer_trains_under_bfloat16_autocast(tiny, prepared, form):
    """HARDY-MER's stages (L_task + L_sup + L_rec; the views' several steps) under autocast."""
    from hardymer.models import create_method
    cfg, fold, ctx = prepared
    data = FoldData(ctx.dataset, fold, parse_condition("tv", tiny.modalities), seed=0)
    torch.manual_seed(0)
    m = create_method("hardymer", ctx.dataset.dims, ctx.dataset.n_classes, tiny.task,
                      **{**cfg.model, "sup_form": form,
                         **({"ranking": "merge-order"} if form == "views" else {})})
    m.attach(ctx, data, None)
    batch = next(iter(data.train_loader(1, True, batch_size=8)))
    for stage in m.stages([1, 1]):
        m.on_epoch_start(1, stage, data)
        for compute in m.stage_steps(batch, stage):
            m.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss, parts = compute()
            assert torch.isfinite(loss), (stage.name, parts)
            loss.backward()
            assert all(torch.isfinite(p.grad).all() for p in m.parameters()
                       if p.grad is not None)


def test_bfloat16_warns_only_where_the_hardware_emulates_it(monkeypatch):
    """On a CPU without bf16 units (this CI's) autocast is a 10x slowdown: say so; where the
    hardware has them, stay silent."""
    cfg = load_run_config("momke", "iemocap", ["train.precision=bfloat16"])
    monkeypatch.setattr(trainer_module, "bf16_is_native", lambda device: False)
    with pytest.warns(RuntimeWarning, match="without bfloat16 units.*float32"):
        Trainer(cfg.train, None, progress=False)
    monkeypatch.setattr(trainer_module, "bf16_is_native", lambda device: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(cfg.train, None, progress=False)
        Trainer(load_run_config("momke", "iemocap", []).train, None, progress=False)
