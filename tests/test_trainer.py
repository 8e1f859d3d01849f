"""The trainer: resumption, shared stage 1, selection protocols, logs and checkpoints."""
import json

import pytest

from hardymer.protocol import make_folds, parse_condition
from hardymer.runs.config import load_run_config
from hardymer.runs.experiment import build_method, run_experiment
from hardymer.training.loaders import FoldData
from hardymer.training.trainer import Trainer

FAST = ["train.epochs=[2,3]", "model.hidden=16", "model.depth=1", "train.lr=1e-3",
        "train.batch_size=8"]


def cfg_for(*extra):
    return load_run_config("momke", "iemocap", FAST + list(extra))


class Killed(Exception):
    pass


@pytest.mark.parametrize("every, last_at", [(1, 4), (3, 2)])
def test_resume_after_kill_matches_uninterrupted(toy, tmp_path, every, last_at):
    """Killed after epoch 4: resumes from the last checkpoint written (epoch 4 when writing
    every epoch; the end of stage 1 with a 3-epoch cadence) and replays to the same end."""
    cfg = cfg_for(f"train.checkpoint_every={every}")
    fold = make_folds(toy)[0]
    data = FoldData(toy, fold, parse_condition("random:0.4", toy.modalities), seed=cfg.train.seed)

    full = Trainer(cfg.train, tmp_path / "full", progress=False).fit(build_method(cfg, toy), data)

    def kill_at_4(row):
        if row["epoch"] == 4:
            raise Killed
    with pytest.raises(Killed):
        Trainer(cfg.train, tmp_path / "cut", progress=False, on_epoch_end=kill_at_4).fit(
            build_method(cfg, toy), data)
    assert json.loads((tmp_path / "cut" / "last.json").read_text())["epoch"] == last_at
    resumed = Trainer(cfg.train, tmp_path / "cut", progress=False).fit(build_method(cfg, toy), data)
    assert resumed.test == full.test and resumed.val == full.val
    assert resumed.selected_epoch == full.selected_epoch
    log = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3, 4, 5]            # no duplicated rows
    assert [r["train_loss"] for r in log] == [r["train_loss"] for r in full.history]


def test_shared_stage1_equals_one_run(toy, tmp_path):
    cfg = cfg_for()
    fold = make_folds(toy)[1]
    cond = parse_condition("at", toy.modalities)
    alone = Trainer(cfg.train, None, progress=False).fit(build_method(cfg, toy),
                                                         FoldData(toy, fold, cond, cfg.train.seed))
    (rec,) = run_experiment(cfg, toy, [cond], [1], tmp_path, progress=False)
    assert rec["test_WA"] == alone.test["WA"] and rec["selected_epoch"] == alone.selected_epoch
    assert (tmp_path / "fold1" / "_shared" / "unimodal" / "last.json").is_file()


def test_val_protocol_never_evaluates_test_during_training(toy):
    cfg = cfg_for()
    data = FoldData(toy, make_folds(toy)[0], parse_condition("t", toy.modalities), cfg.train.seed)
    res = Trainer(cfg.train, None, progress=False).fit(build_method(cfg, toy), data)
    assert not any(k.startswith("test_") for row in res.history for k in row)
    assert res.selected_epoch in (3, 4, 5)       # stage-2 epochs only


def test_paper_protocol_picks_best_test_epoch(toy):
    cfg = cfg_for("train.protocol=paper")
    assert cfg.train.protocol == "paper"
    data = FoldData(toy, make_folds(toy)[0], parse_condition("t", toy.modalities), cfg.train.seed)
    res = Trainer(cfg.train, None, progress=False).fit(build_method(cfg, toy), data)
    best = max((r for r in res.history if "test_WA" in r), key=lambda r: r["test_WA"])
    assert res.selected_epoch == best["epoch"]
    assert res.test["WA"] == pytest.approx(best["test_WA"])


def test_run_folder_is_resumable_and_checks_config(toy, tmp_path):
    cfg = cfg_for()
    conds = [parse_condition(c, toy.modalities) for c in ("a", "tv")]
    first = run_experiment(cfg, toy, conds, [0], tmp_path, progress=False)
    assert {r["condition"] for r in first} == {"a", "tv"}
    for r in first:
        assert r["protocol"] == "val"
    again = run_experiment(cfg, toy, conds, [0], tmp_path, progress=False)
    assert again == first                        # read back, not retrained
    with pytest.raises(ValueError, match="different configuration"):
        run_experiment(cfg_for("train.lr=0.5"), toy, conds, [0], tmp_path, progress=False)
    files = {p.name for p in (tmp_path / "fold0" / "a").iterdir()}
    assert {"best.safetensors", "best.json", "last.safetensors", "last.json", "metrics.csv",
            "metrics.jsonl", "result.json"} <= files
    assert not any(p.suffix == ".pkl" or p.suffix == ".pt" for p in tmp_path.rglob("*"))


def test_bad_fold_is_a_clear_error(toy):
    with pytest.raises(ValueError, match="fold 7 does not exist"):
        run_experiment(cfg_for(), toy, [parse_condition("a", toy.modalities)], [7], None,
                       progress=False)


def test_auto_checkpoint_cadence_writes_at_stage_ends(toy, tmp_path, monkeypatch):
    """Auto cadence: a write that costs more than 1/20 of the training since the last one
    waits; the end of each stage is always written."""
    import hardymer.training.trainer as trainer_mod
    written = []
    real = trainer_mod.save_checkpoint

    def slow_save(stem, model, opt, state, **kw):
        real(stem, model, opt, state, **kw)
        if stem.name == "last":
            written.append(state["epoch"])
            trainer_mod.time.sleep(0.2)   # a write far costlier than these tiny epochs
    monkeypatch.setattr(trainer_mod, "save_checkpoint", slow_save)
    cfg = cfg_for("train.epochs=[3,4]")
    data = FoldData(toy, make_folds(toy)[0], parse_condition("at", toy.modalities), seed=0)
    Trainer(cfg.train, tmp_path, progress=False).fit(build_method(cfg, toy), data)
    assert written[0] == 1 and 3 in written and written[-1] == 7
    assert len(written) < 7


@pytest.mark.parametrize("protocol", ["val", "paper"])
def test_patience_stops_on_the_protocols_metric_and_resumes_stopped(toy, tmp_path, protocol):
    cfg = cfg_for("train.epochs=[1,30]", "train.patience=2", f"train.protocol={protocol}",
                  "train.lr=3e-2")
    data = FoldData(toy, make_folds(toy)[0], parse_condition("t", toy.modalities), seed=0)
    res = Trainer(cfg.train, tmp_path, progress=False).fit(build_method(cfg, toy), data)
    judged = "test_WA" if protocol == "paper" else "val_WA"
    rows = [r for r in res.history if judged in r]
    assert len(res.history) < 31                       # stopped early
    best = max(rows, key=lambda r: r[judged])          # first of the maxima: `better` is strict
    assert res.selected_epoch == best["epoch"] == res.history[-1]["epoch"] - 2
    assert all(r[judged] <= best[judged] for r in rows[-2:])
    if protocol == "val":
        assert not any(k.startswith("test_") for r in res.history for k in r)
    again = Trainer(cfg.train, tmp_path, progress=False).fit(build_method(cfg, toy), data)
    assert len(again.history) == len(res.history) and again.test == res.test


def test_utterance_budget_batches_pack_whole_sequences(toy):
    from hardymer.training.loaders import UtteranceBudgetBatches
    lengths = [len(s) for s in toy.sequences]
    batches = list(UtteranceBudgetBatches(range(len(lengths)), lengths, 30))
    assert [i for b in batches for i in b] == list(range(len(lengths)))   # order kept
    for b in batches:
        assert sum(lengths[i] for i in b) <= 30 or len(b) == 1
    for b, nxt in zip(batches, batches[1:]):     # greedy: the next sequence did not fit
        assert sum(lengths[i] for i in b) + lengths[nxt[0]] > 30
    cfg = cfg_for("train.batch_utterances=30")
    data = FoldData(toy, make_folds(toy)[0], parse_condition("at", toy.modalities), seed=0)
    loader = data.train_loader(1, True, cfg.train.batch_size, None, cfg.train.batch_utterances)
    sizes = [b.n_utterances for b in loader]
    assert sum(sizes) == len(toy.rows_of(make_folds(toy)[0].train))
    res = Trainer(cfg.train, None, progress=False).fit(build_method(cfg, toy), data)
    assert res.history[-1]["train_utt_per_s"] > 0
