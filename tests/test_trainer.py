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


def test_resume_after_kill_matches_uninterrupted(toy, tmp_path):
    cfg = cfg_for()
    fold = make_folds(toy)[0]
    data = FoldData(toy, fold, parse_condition("random:0.4", toy.modalities), seed=cfg.train.seed)

    full = Trainer(cfg.train, tmp_path / "full", progress=False).fit(build_method(cfg, toy), data)

    def kill_at_4(row):
        if row["epoch"] == 4:
            raise Killed
    with pytest.raises(Killed):
        Trainer(cfg.train, tmp_path / "cut", progress=False, on_epoch_end=kill_at_4).fit(
            build_method(cfg, toy), data)
    assert json.loads((tmp_path / "cut" / "last.json").read_text())["epoch"] == 4
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
