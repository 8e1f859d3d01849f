"""Skipping absent work (``model.skip_absent``) changes no number: outputs and parameter
gradients equal the full computation's (float64, dropout off), under every fixed condition and
under per-utterance random masks (where the expert layers run on the available rows only)."""
from dataclasses import replace

import pytest
import torch

from hardymer.data.dataset import collate
from hardymer.models import create_method
from hardymer.models.hardymer.teacher import Teacher, TeacherConfig
from hardymer.protocol import all_fixed_conditions

NO_DROPOUT = dict(hidden=16, depth=2, heads=2, dropout=0.0, attn_dropout=0.0)


def _batch(toy, cond):
    rows = [toy.sequences[i] for i in range(6)]
    batch = collate(toy, rows)
    if cond == "random":   # each utterance its own mask, at least one modality kept
        g = torch.Generator().manual_seed(1)
        keep = torch.rand(batch.available.shape, generator=g) < 0.5
        keep[..., 0] |= ~keep.any(-1)
    else:
        keep = torch.tensor([m in cond.keep for m in toy.modalities])
    batch = batch.with_available(batch.available & keep)
    return replace(batch, x={m: v.double() for m, v in batch.x.items()})


def _conditions(toy):
    return list(all_fixed_conditions(toy.modalities)) + ["random"]


def _run(model, batch, out):
    model.zero_grad(set_to_none=True)
    y = out(model, batch)
    y.pow(2).sum().backward()
    # None and zero differ to Adam (zero still moves a parameter by its momentum): compare both
    grads = {n: p.grad.clone() if p.grad is not None else None
             for n, p in model.named_parameters()}
    return y.detach(), grads


def _pair(build, toy, out):
    for cond in _conditions(toy):
        batch = _batch(toy, cond)
        results = []
        for skip in (False, True):
            torch.manual_seed(0)
            model = build(skip).double().train()
            results.append(_run(model, batch, out))
        (y0, g0), (y1, g1) = results
        torch.testing.assert_close(y1, y0, rtol=0, atol=1e-6)
        assert {n for n, g in g1.items() if g is None} == {n for n, g in g0.items() if g is None}
        for name in g0:
            if g0[name] is not None:
                torch.testing.assert_close(g1[name], g0[name], rtol=0, atol=1e-6,
                                           msg=f"{cond}: gradient of {name}")


@pytest.mark.parametrize("method,extra", [
    ("momke", {}), ("momke", {"router": False}), ("momke", {"mixing": False}),
    ("hardymer", {})])
def test_outputs_and_gradients_equal_the_full_computation(toy, method, extra):
    def build(skip):
        return create_method(method, dims=toy.dims, n_outputs=4, task="classification",
                             skip_absent=skip, **NO_DROPOUT, **extra)
    _pair(build, toy, lambda m, b: m(b))


def test_the_teacher_too(toy):
    def build(skip):
        return Teacher(TeacherConfig(skip_absent=skip, **NO_DROPOUT), toy.dims, 4,
                       "classification")

    def out(model, batch):
        logits, recon = model.reconstruct(batch)
        return torch.cat([logits] + list(recon.values()), dim=-1)
    _pair(build, toy, out)


def test_absent_modalities_do_no_expert_work(toy):
    """Under a single-modality condition the experts see one input modality, not three."""
    model = create_method("momke", dims=toy.dims, n_outputs=4, task="classification",
                          skip_absent=True, **NO_DROPOUT).double()
    seen = []
    model.experts["t"].layers[0].mlp.register_forward_hook(
        lambda mod, args, out: seen.append(args[0].shape[0]))
    cond = next(c for c in all_fixed_conditions(toy.modalities) if c.name == "a")
    batch = _batch(toy, cond)
    model(batch)
    assert seen == [int(batch.available[..., 0].sum())]   # only audio's utterances, no padding


@pytest.mark.parametrize("method", ["momke", "hardymer"])
def test_stage_one_loss_and_gradients_equal_the_full_computation(toy, method):
    """Stage 1 runs each expert on the utterances its modality has (no padding slots)."""
    def build(skip):
        return create_method(method, dims=toy.dims, n_outputs=4, task="classification",
                             skip_absent=skip, **NO_DROPOUT)
    stage = build(True).stages([1, 1])[0]
    assert stage.name == "unimodal"
    _pair(build, toy, lambda m, b: m.stage_loss(b, stage)[0])


def test_expert_layers_run_on_available_rows_only(toy):
    """Under per-utterance masks the expert layers see the N available utterances of each
    input modality, not the B x S padded grid."""
    model = create_method("momke", dims=toy.dims, n_outputs=4, task="classification",
                          skip_absent=True, **NO_DROPOUT).double()
    seen = []
    model.experts["t"].layers[0].mlp.register_forward_hook(
        lambda mod, args, out: seen.append(args[0].shape[0]))
    batch = _batch(toy, "random")
    model(batch)
    assert seen == [int(batch.available.sum())]
    assert seen[0] < batch.available.shape[0] * batch.available.shape[1] * 3
