"""Curriculum variants of HARDY-MER (mass, focus, pace, views): the weights each gives, that
the fast form computes the explicit objective, who gets help, resume, and the CLI forms."""
import numpy as np
import pytest
import torch

from hardymer.models import create_method
from hardymer.models.hardymer.plan import CurriculumPlan
from hardymer.protocol import parse_condition
from hardymer.runs.config import load_run_config
from hardymer.runs.experiment import run_experiment
from hardymer.training.loaders import FoldData
from hardymer.training.method import Stage

SMALL = ["model.hidden=16", "model.depth=1", "model.teacher_epochs=[1,2]",
         "model.finetune_epochs=2", "train.epochs=[1,3]", "train.lr=1e-3"]


def toy_plan() -> CurriculumPlan:
    """Four training samples (ids 10..13), k = 3, k' = 0, 1, 2, 3."""
    inf = np.inf
    return CurriculumPlan(
        ids=np.array([10, 11, 12, 13]), available=np.ones((4, 2), bool),
        h_dir_raw=np.zeros(4), h_ind_raw=np.zeros(4), h_dir=np.zeros(4), h_ind=np.zeros(4),
        h=np.array([0.0, 0.25, 0.5, 1.0]), k_prime=np.array([0, 1, 2, 3]),
        support_ids=np.array([[11, 12, 13], [12, 13, 10], [10, 13, 11], [10, 11, 12]]),
        support_dist=np.array([[1, 2, 3], [1, 2, 3], [1, 2, 3], [1, 2, 3]], np.float32)
        + 0 * inf)


@pytest.mark.parametrize("variant, own, pair", [
    ("paper", [1, 1, 1, 1], [0, 1, 1 / 2, 1 / 3]),
    ("mass", [1, 1, 1, 1], [0, 1, 1, 1]),
    ("focus", [1, 1.5, 2, 3], [0, 1, 1 / 2, 1 / 3]),        # gamma = 2: 1 + 2 h
])
def test_weights_by_hand(variant, own, pair):
    plan = toy_plan()
    cw = plan.curriculum(variant, gamma=2.0)
    assert cw.own == pytest.approx(own) and cw.pair == pytest.approx(pair)
    # help: own + lambda k' pair; loss weight: own + lambda * (sum of pair over who picks me)
    lam = 0.5
    assert cw.help(plan, lam) == pytest.approx(np.array(own) + lam * plan.k_prime * pair)
    # S(11) = {12}; S(12) = {10, 13}; S(13) = {10, 11, 12}
    p = pair
    got = [p[2] + p[3], p[3], p[1] + p[3], p[2]]
    assert cw.loss_weight(plan, lam) == pytest.approx(np.array(own) + lam * np.array(got))


def test_pace_anneals_from_easy_first_to_hard_first():
    plan = toy_plan()
    first, mid, last = (plan.curriculum("pace", progress=t, eta=0.5) for t in (0.0, 0.5, 1.0))
    assert first.own == pytest.approx([1.5, 1.25, 1.0, 0.5])      # 1 + eta (2t-1)(2h-1)
    assert mid.own == pytest.approx([1, 1, 1, 1]) and last.own == pytest.approx([0.5, 0.75, 1,
                                                                                  1.5])
    assert last.pair == pytest.approx(last.pace * np.array([0, 1, 1 / 2, 1 / 3]))
    stage = Stage("mixing", 5, start=3)
    assert [stage.progress(e) for e in (4, 5, 8)] == [0.0, 0.25, 1.0]
    assert Stage("mixing", 1, start=3).progress(4) == 0.0


@pytest.mark.parametrize("variant", ["mass", "focus", "pace"])
def test_fast_form_computes_the_explicit_objective(tiny, prepared, variant):
    """Under a fixed condition the per-sample weights give exactly the loss of forwarding
    each query's supports with the variant's weights; and the variant changes the loss."""
    cfg, fold, ctx = prepared
    data = FoldData(ctx.dataset, fold, parse_condition("tv", tiny.modalities), seed=0)
    stage = Stage("mixing", 3, start=1)
    losses = {}
    for form, curriculum in (("weights", variant), ("explicit", variant),
                             ("weights", "paper")):
        torch.manual_seed(0)
        m = create_method("hardymer", ctx.dataset.dims, ctx.dataset.n_classes, tiny.task,
                          **{**cfg.model, "sup_form": form, "curriculum": curriculum})
        m.attach(ctx, data, None)
        m.on_epoch_start(2, stage, data)       # progress 0: pace at its easy-first end
        m.eval()
        batch = next(iter(data.train_loader(2, True, batch_size=len(fold.train))))
        with torch.no_grad():
            loss, parts = m.stage_loss(batch, stage)
        losses[form, curriculum] = (float(loss), parts)
    (lw, pw), (le, pe) = losses["weights", variant], losses["explicit", variant]
    assert pw["sup"] == pytest.approx(pe["sup"], rel=1e-5) and lw == pytest.approx(le, rel=1e-5)
    assert lw != pytest.approx(losses["weights", "paper"][0], rel=1e-4)


@pytest.fixture(scope="module")
def variant_runs(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("curriculum")
    runs = {}
    for variant in ("paper", "mass", "focus", "pace"):
        cfg = load_run_config("hardymer", tiny.family, SMALL + [f"model.curriculum={variant}"])
        run_experiment(cfg, tiny, [parse_condition(c, tiny.modalities) for c in ("at", "tv")],
                       [0], root / variant, progress=False, data_source="synth:tiny")
        runs[variant] = root / variant
    return runs


def test_harder_samples_get_more_help(variant_runs, tmp_path):
    """The hardness table's effective weights: help grows with h for mass, focus and pace
    (its hard-first end; easy-first at the start), and not for the paper's form."""
    from hardymer.reports.hardness import inspect_run
    rho = {}
    for variant, run in variant_runs.items():
        res = inspect_run(run, tmp_path / variant)
        s = res["summary"].set_index("condition")
        rho[variant] = s
        assert (tmp_path / variant / "weights.csv").is_file()
    for variant in ("mass", "focus"):
        assert (rho[variant].spearman_help_h_first > 0.5).all(), variant
    assert (rho["pace"].spearman_help_h_last > 0.5).all()
    assert (rho["pace"].spearman_help_h_first < -0.5).all()
    paper = rho["paper"].spearman_help_h_first.fillna(0.0)
    assert (paper.abs() < 0.3).all()    # 1 + lambda for every query with a support
    assert (rho["paper"].spearman_loss_weight_h_first.fillna(0.0) < 0.3).all()


def test_pace_resumes_mid_stage_to_the_same_result(tiny, tmp_path, monkeypatch):
    """The pace's position in the stage comes from the trainer: 0, 0.5, 1 over 3 conditioned
    epochs, and the same after a kill mid-stage and a resume."""
    from hardymer.models.hardymer import HardyMER
    from conftest import killed_and_resumed
    cfg = load_run_config("hardymer", tiny.family, SMALL + ["model.curriculum=pace"])
    conds = [parse_condition("tv", tiny.modalities)]
    seen = []
    original = HardyMER.on_epoch_start

    def record(self, epoch, stage, data):
        seen.append((epoch, stage.name, stage.progress(epoch)))
        original(self, epoch, stage, data)
    monkeypatch.setattr(HardyMER, "on_epoch_start", record)
    (full,), (resumed,) = killed_and_resumed(
        HardyMER, lambda name: run_experiment(cfg, tiny, conds, [0], tmp_path / name,
                                              progress=False), 3, monkeypatch)
    assert [p for e, n, p in seen if n == "mixing"][:3] == [0.0, 0.5, 1.0]
    assert [e for e, n, p in seen if n == "mixing"][3:5] == [2, 3]     # the cut run, recorded
    for key in ("test_WA", "test_UA", "val_WA", "selected_epoch"):
        assert resumed[key] == full[key], key


def test_cli_forms_and_refusals(tmp_path):
    from typer.testing import CliRunner
    from hardymer.cli.main import app
    from hardymer.runs.sweep import load_spec
    res = CliRunner().invoke(app, ["list"])
    assert "mass" in res.output and "pace" in res.output and "views" in res.output
    spec = load_spec(None, data="synth:tiny", methods=["hardymer:mass", "hardymer:views"],
                     conditions=["at"], seeds=[0], folds="0")
    sets = {v.name: v.set for v in spec.methods}
    assert "model.curriculum=mass" in sets["hardymer:mass"]
    assert "model.sup_form=views" in sets["hardymer:views"]
    res = CliRunner().invoke(app, ["train", "--data", "synth:tiny", "--method", "hardymer",
                                   "--condition", "at", "--fold", "0", "--ablation", "focus",
                                   "--out", str(tmp_path / "f"), "--no-progress",
                                   *sum((["--set", s] for s in SMALL), [])])
    assert res.exit_code == 0, res.output
    for bad, match in (("model.curriculum=harder", "model.curriculum"),
                       ("model.pace_eta=1.0", "pace_eta"),
                       ("model.focus_gamma=-1", "focus_gamma")):
        with pytest.raises(ValueError, match=match):
            create_method("hardymer", {"a": 4}, 2, "classification",
                          **{bad.split("=")[0].split(".")[1]: _value(bad)})
    with pytest.raises(ValueError, match="cannot be combined with sup_form=views"):
        create_method("hardymer", {"a": 4}, 2, "classification", curriculum="mass",
                      sup_form="views")


def _value(text):
    v = text.split("=")[1]
    try:
        return float(v)
    except ValueError:
        return v


def test_complete_targets_by_hand_and_in_the_loss(tiny, prepared):
    """complete: x's extra target is the mean of its supports' true features, weighted
    k'/k; the stage's reconstruction term is the paper's plus exactly that."""
    from hardymer.models.decoder import reconstruction_error
    from hardymer.models.hardymer.plan import neighbour_targets
    plan = toy_plan()
    feats = {"a": np.arange(14, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)}
    t, w = neighbour_targets(plan, feats, 14, k=3)
    # S(10) = {}, S(11) = {12}, S(12) = {10, 13}, S(13) = {10, 11, 12}
    assert t["a"][10:14, 0] == pytest.approx([0.0, 12.0, 11.5, 11.0])
    assert w[10:14] == pytest.approx([0, 1 / 3, 2 / 3, 1]) and not w[:10].any()

    cfg, fold, ctx = prepared
    data = FoldData(ctx.dataset, fold, parse_condition("t", tiny.modalities), seed=0)
    stage = Stage("mixing", 2, start=1)
    rec = {}
    for curriculum in ("paper", "complete"):
        torch.manual_seed(0)
        m = create_method("hardymer", ctx.dataset.dims, ctx.dataset.n_classes, tiny.task,
                          **{**cfg.model, "curriculum": curriculum})
        m.attach(ctx, data, None)
        m.on_epoch_start(2, stage, data)
        m.eval()
        batch = next(iter(data.train_loader(2, True, batch_size=len(fold.train))))
        with torch.no_grad():
            _, parts = m.stage_loss(batch, stage)
            _, recon = m.forward_all(m.inputs(batch))
        rec[curriculum] = parts["rec"]
    n = batch.utt_mask.sum()
    missing = (batch.present & ~batch.available & batch.utt_mask[..., None]).float()
    targets, weight = neighbour_targets(m._plan, {k: ctx.dataset.features[k]
                                                   for k in tiny.modalities},
                                        ctx.dataset.n_utterances, cfg.model["k"])
    idx = batch.index.clamp(min=0)
    extra = (reconstruction_error(recon, {k: torch.from_numpy(v)[idx] for k, v in
                                          targets.items()}, missing)
             * torch.from_numpy(weight).float()[idx] * batch.utt_mask).sum() / n
    assert float(extra) > 0
    assert rec["complete"] == pytest.approx(rec["paper"] + float(extra), rel=1e-5)


@pytest.mark.parametrize("support_labels", ["query", "own"])
def test_views_carry_the_query_label_or_their_own(support_labels):
    """The views form: each view shows a neighbour's features under the query's mask, with
    the query's label (reference, the `views` variant) or, with support_labels=own, with the
    label of the utterance it shows. Features encode the utterance id in their first column, so
    each view's label can be checked against the utterance it carries."""
    from types import SimpleNamespace

    from hardymer.data.dataset import Batch
    from hardymer.models.hardymer.reference import view_batches
    from hardymer.retrieval import FeatureDatabase
    rng = np.random.default_rng(0)
    n, mods = 12, ("a", "t")
    feats = {m: np.concatenate([np.arange(n)[:, None] * 10.0, rng.normal(size=(n, 3))], 1)
             .astype(np.float32) for m in mods}
    labels = np.arange(n) % 4
    db = FeatureDatabase.build(feats, ids=np.arange(n))
    index = torch.tensor([[0, 1, 2], [5, 6, -1]])
    um = index >= 0
    x = {m: torch.from_numpy(feats[m][index.clamp(min=0).numpy()]) * um[..., None] for m in mods}
    present = um[..., None].expand(2, 3, 2).clone()
    batch_labels = torch.from_numpy(labels[index.clamp(min=0).numpy()]) * um
    batch = Batch(x=x, available=present & torch.tensor([True, False]), present=present,
                  utt_mask=um, labels=batch_labels, index=index,
                  speaker=torch.zeros((2, 3), dtype=torch.long), modalities=mods)
    cfg = SimpleNamespace(k=3, row_bug=False, support_labels=support_labels)
    views = view_batches(batch, cfg, db, feats, labels=labels)
    assert len(views) == 4
    shown = [(v.x["a"][..., 0] / 10).round().long() for v in views]     # utterance ids shown
    assert any((s[um] != index[um]).any() for s in shown)              # neighbours, not only x
    for v, s in zip(views, shown):
        want = torch.from_numpy(labels)[s] if support_labels == "own" else batch_labels
        assert torch.equal(v.labels[um], want[um])
        assert torch.equal(v.available, batch.available)               # the query's mask


def test_views_refuse_a_ranking_they_do_not_use():
    with pytest.raises(ValueError, match="ranking=combined with model.sup_form=views"):
        create_method("hardymer", {"a": 4}, 2, "classification", sup_form="views")
    create_method("hardymer", {"a": 4}, 2, "classification", sup_form="views",
                  ranking="merge-order")
