"""Training curves (``train.log=[tensorboard]``): what TensorBoard reads equals metrics.jsonl,
each epoch once after a kill and resume; a clear error without the package."""
import json
import sys

import pytest

from hardymer.protocol import make_folds, parse_condition
from hardymer.runs.config import load_run_config
from hardymer.runs.experiment import build_method
from hardymer.training.config import TrainConfig
from hardymer.training.loaders import FoldData
from hardymer.training.tracking import tag
from hardymer.training.trainer import Trainer

pytest.importorskip("tensorboard")   # the [tracking] extra; part of [test], so CI has it
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

FAST = ["train.epochs=[2,3]", "model.hidden=16", "model.depth=1", "train.lr=1e-3",
        "train.batch_size=8", "train.log=[tensorboard]"]


class Killed(Exception):
    pass


def _scalars(folder) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(folder / "tensorboard"))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_tags_follow_the_split():
    assert [tag(k) for k in ("train_loss", "train_loss_a", "val_WA", "test_UA", "lr",
                             "train_utt_per_s", "eval_seconds")] == [
        "train/loss", "train/loss_a", "val/WA", "test/UA", "train/lr", "train/utt_per_s",
        "time/eval_seconds"]


def test_curves_equal_the_log_and_show_each_epoch_once_after_a_resume(toy, tmp_path):
    cfg = load_run_config("momke", "iemocap", FAST + ["train.checkpoint_every=3"])
    data = FoldData(toy, make_folds(toy)[0], parse_condition("at", toy.modalities),
                    seed=cfg.train.seed)

    def kill_at_4(row):
        if row["epoch"] == 4:
            raise Killed
    with pytest.raises(Killed):   # last written at epoch 2: the restart replays 3 and 4
        Trainer(cfg.train, tmp_path, progress=False, on_epoch_end=kill_at_4).fit(
            build_method(cfg, toy), data)
    Trainer(cfg.train, tmp_path, progress=False).fit(build_method(cfg, toy), data)

    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    got = _scalars(tmp_path)
    assert [s for s, _ in got["train/loss"]] == [1, 2, 3, 4, 5]   # once each
    for key in ("train_loss", "train_utt_per_s", "lr", "val_WA"):
        want = [(r["epoch"], r[key]) for r in rows if key in r]
        assert [s for s, _ in got[tag(key)]] == [s for s, _ in want]
        assert [v for _, v in got[tag(key)]] == pytest.approx([v for _, v in want], rel=1e-6)
    assert [s for s, _ in got["val/WA"]] == [3, 4, 5]      # stage 2 only selects
    assert "test/WA" not in got                             # never evaluated under val


def test_unknown_tracker_or_missing_package_is_a_clear_error(monkeypatch):
    with pytest.raises(ValueError, match=r"train.log=\['wandb'\]; expected a list of trackers"):
        TrainConfig(log=["wandb"]).check()
    monkeypatch.setitem(sys.modules, "tensorboard", None)   # as if not installed
    with pytest.raises(ValueError, match=r"pip install -e \"\.\[tracking\]\""):
        TrainConfig(log=["tensorboard"]).check()


def test_log_can_be_switched_on_for_a_started_run_and_a_sweep(tmp_path):
    """--log is no part of what a run computes: a run folder (and a sweep folder) started
    without it accepts the same command with it, and curves appear for what is trained next."""
    from typer.testing import CliRunner

    from hardymer.cli.main import app
    fast = ["--set", "train.epochs=[1,1]", "--set", "model.hidden=8", "--set", "model.depth=1",
            "--no-progress"]
    run = lambda *a: CliRunner().invoke(app, [str(x) for x in a])  # noqa: E731
    out = tmp_path / "run"
    base = ["train", "--data", "synth:tiny", "--condition", "a", "--fold", 0, "--out", out]
    assert run(*base, *fast).exit_code == 0
    res = run(*base[:3], "--condition", "at", "--fold", 0, "--out", out, *fast,
              "--log", "tensorboard")
    assert res.exit_code == 0, res.output
    assert _scalars(out / "fold0" / "at")["val/WA"]            # the new cell has curves
    assert not (out / "fold0" / "a" / "tensorboard").exists()  # the finished one is untouched

    sweep = ["sweep", "--data", "synth:tiny", "--methods", "zero-fill", "--folds", 0,
             "--set", "train.epochs=[1]", "--no-report", "--no-progress", "--out",
             tmp_path / "sw"]
    assert run(*sweep, "--conditions", "a").exit_code == 0
    res = run(*sweep, "--conditions", "a,t", "--log", "tensorboard")
    assert res.exit_code == 0, res.output
    assert list((tmp_path / "sw").rglob("tensorboard"))
    res = run(*sweep, "--conditions", "a", "--log", "wandb")
    assert res.exit_code != 0 and "train.log=['wandb']" in res.output
