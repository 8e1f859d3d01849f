"""HARDY-MER: fine-tuning without leakage, hardness, plans, the two L_sup forms, switches."""
import numpy as np
import pytest
import torch

from hardymer.models.hardymer.finetune import FinetuneConfig, finetune_features
from hardymer.models.hardymer import context as context_mod
from hardymer.models.hardymer.estimate import combine_hardness, normalise01, whitened_error
from hardymer.models.hardymer.teacher import random_patterns
from hardymer.models import create_method
from hardymer.models.hardymer import REFERENCE_CHOICES, HardyConfig
from hardymer.protocol import make_folds, parse_condition
from hardymer.retrieval import support_counts
from hardymer.runs.config import load_run_config
from hardymer.runs.experiment import run_experiment
from hardymer.training.loaders import FoldData

SMALL = ["model.hidden=16", "model.depth=1", "model.teacher_epochs=[1,2]",
         "model.finetune_epochs=2", "train.epochs=[1,2]", "train.lr=1e-3"]


def test_finetuning_never_sees_test_labels(tiny):
    fold = make_folds(tiny)[0]
    cfg = FinetuneConfig(epochs=2)
    a = finetune_features(tiny, fold.train, fold.val, cfg, torch.device("cpu"))
    test_rows = np.concatenate([tiny.sequences[s] for s in fold.test])
    from dataclasses import replace
    labels = tiny.labels.copy()
    labels[test_rows] = (labels[test_rows] + 1) % tiny.n_classes  # scramble test labels only
    b = finetune_features(replace(tiny, labels=labels), fold.train, fold.val, cfg,
                          torch.device("cpu"))
    for m in tiny.modalities:
        np.testing.assert_array_equal(a[m], b[m])
        assert a[m].shape == tiny.features[m].shape


def test_finetuning_cache_is_reused(tiny, tmp_path):
    fold = make_folds(tiny)[0]
    cfg = FinetuneConfig(epochs=1)
    a = finetune_features(tiny, fold.train, fold.val, cfg, torch.device("cpu"), tmp_path)
    stamp = (tmp_path / "a.npy").stat().st_mtime_ns
    b = finetune_features(tiny, fold.train, fold.val, cfg, torch.device("cpu"), tmp_path)
    assert (tmp_path / "a.npy").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(a["t"], b["t"])


def test_random_patterns_are_nonempty_subsets_of_present():
    torch.manual_seed(0)
    present = torch.rand(4, 50, 3) > 0.2
    present[0, 0] = False
    present[0, 0, 1] = True
    pat = random_patterns(present)
    assert not (pat & ~present).any()
    has = present.any(-1)
    assert (pat.any(-1) == has).all()
    codes = (pat.long() * torch.tensor([1, 2, 4])).sum(-1)[present.all(-1)]
    assert len(codes.unique()) == 7  # every non-empty pattern is drawn


def test_normalise_and_combine():
    x = np.array([3.0, 1.0, 2.0, 5.0])
    np.testing.assert_allclose(normalise01(x), [0.5, 0, 0.25, 1])
    np.testing.assert_allclose(normalise01(x, "rank"), [2 / 3, 0, 1 / 3, 1])
    assert (normalise01(np.ones(3)) == 0).all()
    d, i, h = combine_hardness(x, -x)
    np.testing.assert_allclose(d + i, 1.0)   # opposite terms cancel in the sum
    assert (h == 0).all()
    _, _, h = combine_hardness(x, x, fusion="sigmoid")
    assert h.min() == pytest.approx(0.5) and h.max() == pytest.approx(1 / (1 + np.exp(-4)))
    d, i, h = combine_hardness(x, 2 * x, use_dir=False)
    assert (d == 0).all()
    np.testing.assert_allclose(h, normalise01(x))


def test_whitened_error_upweights_rarely_large_directions():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(400, 5)) * np.array([10, 1, 1, 1, 1])  # one noisy direction
    r[0, 1] += 6.0                                                # a 6-sigma outlier elsewhere
    r[1, 0] += 6.0                                                # a 0.6-sigma one in the noise
    e = whitened_error({"a": r}, np.ones((400, 1), bool), ("a",))
    assert e[0] > e[1] and e[0] == e.max()


def test_plan_supports_follow_the_rules(tiny, prepared):
    cfg, fold, ctx = prepared
    data = FoldData(ctx.dataset, fold, parse_condition("at", tiny.modalities), seed=0)
    mask = data.train_mask(1)
    plan = ctx.plan(mask, 1, None)
    train_ids = np.concatenate([tiny.sequences[s] for s in fold.train])
    assert set(plan.ids) == set(train_ids)
    sup = plan.supports
    assert ((sup.ids != plan.ids[:, None]) | (sup.ids < 0)).all()          # never itself
    assert np.isin(sup.ids[sup.mask], train_ids).all()                        # training only
    np.testing.assert_array_equal(plan.k_prime, support_counts(plan.h, 3, "ceil"))
    assert 0 <= plan.h.min() and plan.h.max() == pytest.approx(1.0)
    assert (plan.h_dir_raw > 0).all()           # v is missing under "at": something to rebuild
    full = ctx.plan(FoldData(ctx.dataset, fold, parse_condition("atv", tiny.modalities),
                             seed=0).train_mask(1), 1, None)
    assert (full.h_dir_raw == 0).all()          # nothing missing, no direct hardness
    # weights form: w_j = sum over queries with j in S(x) of 1/k'
    w = plan.weights(tiny.n_utterances)
    assert w.sum() == pytest.approx((plan.k_prime > 0).sum())


def test_weights_and_explicit_forms_give_the_same_objective(tiny, prepared):
    cfg, fold, ctx = prepared
    cond = parse_condition("tv", tiny.modalities)
    data = FoldData(ctx.dataset, fold, cond, seed=0)
    losses = {}
    for form in ("weights", "explicit"):
        torch.manual_seed(0)
        m = create_method("hardymer", ctx.dataset.dims, ctx.dataset.n_classes, tiny.task,
                          **{**cfg.model, "sup_form": form})
        m.attach(ctx, data, None)
        stage = m.stages([1, 1])[1]
        m.on_epoch_start(1, stage, data)
        m.eval()  # no dropout: both forms see identical logits
        batch = next(iter(data.train_loader(1, True, batch_size=len(fold.train))))
        with torch.no_grad():
            _, parts = m.stage_loss(batch, stage)
        losses[form] = parts
    assert losses["weights"]["sup"] > 0
    assert losses["weights"]["sup"] == pytest.approx(losses["explicit"]["sup"], rel=1e-5)
    assert losses["weights"]["task"] == pytest.approx(losses["explicit"]["task"], rel=1e-6)


def test_random_rates_use_the_weights_approximation_unless_explicit_is_named(tiny, prepared):
    """Under random:p the default (auto) is the weights form — a documented approximation:
    each support is scored under its own epoch mask, not its query's — so it differs from the
    explicit form there, and the explicit form stays available by name."""
    cfg, fold, ctx = prepared
    data = FoldData(ctx.dataset, fold, parse_condition("random:0.5", tiny.modalities), seed=0)
    sup = {}
    for form in ("auto", "weights", "explicit"):
        torch.manual_seed(0)
        m = create_method("hardymer", ctx.dataset.dims, ctx.dataset.n_classes, tiny.task,
                          **{**cfg.model, "sup_form": form})
        m.attach(ctx, data, None)
        stage = m.stages([1, 1])[1]
        m.on_epoch_start(1, stage, data)
        m.eval()
        batch = next(iter(data.train_loader(1, True, batch_size=len(fold.train))))
        with torch.no_grad():
            sup[form] = m.stage_loss(batch, stage)[1]["sup"]
    assert sup["auto"] == sup["weights"] > 0
    assert abs(sup["explicit"] - sup["weights"]) > 1e-5      # another objective (close)


def test_no_search_or_teacher_inside_training_steps(tiny, monkeypatch):
    calls = {"rank": 0, "terms": 0}
    rank, terms = context_mod.rank_candidates, context_mod.hardness_terms

    def count(name, fn):
        def wrapped(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapped
    monkeypatch.setattr(context_mod, "rank_candidates", count("rank", rank))
    monkeypatch.setattr(context_mod, "hardness_terms", count("terms", terms))
    cfg = load_run_config("hardymer", tiny.family, SMALL + ["train.epochs=[1,3]"])
    run_experiment(cfg, tiny, [parse_condition("a", tiny.modalities)], [0], None,
                   progress=False)
    assert calls == {"rank": 1, "terms": 1}  # once per (fold, condition), not per step/epoch


def test_step_scope_retrieves_the_same_candidates(tiny, prepared):
    cfg, fold, ctx = prepared
    data = FoldData(ctx.dataset, fold, parse_condition("av", tiny.modalities), seed=0)
    plan = ctx.plan(data.train_mask(1), 1, None)
    batch = next(iter(data.train_loader(1, True, batch_size=4)))
    qids, kp, cand = ctx.step_supports(batch, HardyConfig(**{**cfg.model, "plan_scope": "step"}))
    rows = plan.row_of(tiny.n_utterances)[qids]
    np.testing.assert_array_equal(cand, plan.support_ids[rows])
    assert (kp <= 3).all() and (kp >= 0).all()


def test_reference_compat_switches_every_choice_and_each_stays_a_switch(tiny):
    on = load_run_config("hardymer", tiny.family, ["model.reference_compat=true"])
    off = load_run_config("hardymer", tiny.family, [])
    for k, v in REFERENCE_CHOICES.items():
        assert on.model[k] == v and off.model[k] == getattr(HardyConfig(), k), k
    # The user's own setting wins over the group, in either order on the command line.
    for order in (["model.finetune_scope=fold", "model.reference_compat=true"],
                  ["model.reference_compat=true", "model.finetune_scope=fold"]):
        cfg = load_run_config("hardymer", tiny.family, order)
        assert cfg.model["finetune_scope"] == "fold" and cfg.model["sup_form"] == "views"
    assert HardyConfig.reference().k_rule == "floor+1" and HardyConfig().k_rule == "ceil"
    with pytest.raises(ValueError, match="model.k_rule"):
        create_method("hardymer", {"a": 4}, 2, "classification", k_rule="round")


@pytest.mark.parametrize("override", [
    "model.reference_compat=true", "model.retrieval=false", "model.use_hardness=false",
    "model.finetune=false", "model.use_h_ind=false", "model.teacher_mask=condition",
    "model.plan_scope=step", "model.index=hnsw", "model.ind_estimator=infonce",
    "model.finetune_output=concat", "model.finetune_net=reference"])
def test_switches_run_end_to_end(tiny, override):
    cfg = load_run_config("hardymer", tiny.family, SMALL + [override])
    recs = run_experiment(cfg, tiny, [parse_condition("at", tiny.modalities)], [0], None,
                          progress=False)
    assert 0.0 <= recs[0]["test_WA"] <= 1.0


def test_random_condition_uses_a_plan_per_mask(tiny, tmp_path):
    cfg = load_run_config("hardymer", tiny.family, SMALL + ["train.epochs=[1,3]"])
    run_experiment(cfg, tiny, [parse_condition("random:0.5", tiny.modalities)], [0], tmp_path,
                   progress=False)
    plans = list((tmp_path / "fold0" / "random-0.5" / "curriculum").glob("plan-*.npz"))
    assert len(plans) == 3  # one per epoch: the training mask is redrawn every epoch


@pytest.mark.parametrize("kill_at", [2, 3])  # right after the plan is made; mid stage 2
def test_killed_run_resumes_to_the_same_result(tiny, tmp_path, monkeypatch, kill_at):
    from hardymer.models.hardymer import HardyMER
    from conftest import killed_and_resumed
    cfg = load_run_config("hardymer", tiny.family, SMALL + ["train.epochs=[1,3]"])
    conds = [parse_condition("tv", tiny.modalities)]
    (full,), (resumed,) = killed_and_resumed(
        HardyMER, lambda name: run_experiment(cfg, tiny, conds, [0], tmp_path / name,
                                              progress=False), kill_at, monkeypatch)
    for key in ("test_WA", "test_UA", "val_WA", "selected_epoch"):
        assert resumed[key] == full[key], key


def test_concat_output_keeps_the_raw_features_beside_the_fine_tuned(tiny):
    fold = make_folds(tiny)[0]
    cpu = torch.device("cpu")
    plain = finetune_features(tiny, fold.train, fold.val, FinetuneConfig(epochs=1), cpu)
    both = finetune_features(tiny, fold.train, fold.val, FinetuneConfig(epochs=1,
                                                                        output="concat"), cpu)
    for i, m in enumerate(tiny.modalities):
        d, ok = tiny.dims[m], tiny.available[:, i]
        assert both[m].shape == (tiny.n_utterances, 2 * d)
        np.testing.assert_allclose(both[m][ok, :d], tiny.features[m][ok], rtol=1e-6)
        np.testing.assert_allclose(both[m][:, d:], plain[m], rtol=1e-6)


def test_retired_crossfit_loads_when_off_and_stops_when_it_was_used(tiny, tmp_path):
    import json
    cfg = load_run_config("hardymer", tiny.family, SMALL)
    conds = [parse_condition("a", tiny.modalities)]
    (first,) = run_experiment(cfg, tiny, conds, [0], tmp_path, progress=False)
    meta = json.loads((tmp_path / "run.json").read_text())
    meta["config"]["model"]["finetune_crossfit"] = 0      # as written before it was removed
    (tmp_path / "run.json").write_text(json.dumps(meta))
    (again,) = run_experiment(cfg, tiny, conds, [0], tmp_path, progress=False)
    assert again == first
    meta["config"]["model"]["finetune_crossfit"] = 5
    (tmp_path / "run.json").write_text(json.dumps(meta))
    from hardymer.runs.layout import Run
    with pytest.raises(ValueError, match="model.finetune_crossfit=5"):
        Run(tmp_path).config


def test_old_run_folder_without_new_fields_resumes(tiny, tmp_path):
    import json
    cfg = load_run_config("hardymer", tiny.family, SMALL)
    conds = [parse_condition("a", tiny.modalities)]
    (first,) = run_experiment(cfg, tiny, conds, [0], tmp_path, progress=False)
    meta = json.loads((tmp_path / "run.json").read_text())
    del meta["config"]["model"]["finetune_scope"]          # as written by an older version
    (tmp_path / "run.json").write_text(json.dumps(meta))
    (again,) = run_experiment(cfg, tiny, conds, [0], tmp_path, progress=False)
    assert again == first
