"""Every method through the same pipeline on the tiny preset: one fixed condition and one random
missing rate, written to a run folder, re-evaluated from it under another condition."""
import json

import numpy as np
import pytest

from hardymer.data.synthetic import generate
from hardymer.runs.evaluate import evaluate_run
from hardymer.protocol import parse_condition
from hardymer.runs.config import load_run_config
from hardymer.runs.experiment import run_experiment

from test_methods import ALL, SMALL

# Two short epochs per stage; sizes from test_methods.SMALL.
EPOCHS = {"zero-fill": [2], "cpm-nets": [3], "gcnet": [2], "sdr-gnn": [2], "mran-like": [2], "mctn": [2], "gsdnet-like": [2], "imder": [1, 2]}


@pytest.fixture(scope="module")
def tiny():
    return generate("tiny", seed=0)


def small_config(name):
    epochs = EPOCHS.get(name, [2, 2])
    sets = [f"model.{k}={v}" for k, v in SMALL[name].items()]
    return load_run_config(name, "iemocap", sets + [f"train.epochs={epochs}",
                                                    "train.batch_size=8"])


@pytest.mark.parametrize("name", ALL)
def test_fixed_and_random_conditions_train_evaluate_and_reload(name, tiny, tmp_path):
    cfg = small_config(name)
    conds = [parse_condition(c, tiny.modalities) for c in ("at", "random:0.5")]
    recs = run_experiment(cfg, tiny, conds, [0], tmp_path, progress=False)
    assert [r["condition"] for r in recs] == ["at", "random:0.5"]
    for r in recs:
        assert r["method"] == name and r["protocol"] == "val"
        assert all(np.isfinite(r[f"test_{k}"]) and 0 <= r[f"test_{k}"] <= 1
                   for k in ("WA", "UA", "F1"))
    # The saved model of the fixed condition reloads and reproduces its test score ...
    opener = lambda source: tiny  # noqa: E731
    again = evaluate_run(tmp_path, condition="at", opener=opener)
    assert again["WA"] == pytest.approx(recs[0]["test_WA"], abs=1e-9)
    # ... and can be evaluated under another condition (here: a random missing rate).
    other = evaluate_run(tmp_path, condition="random:0.3", trained_on="at", opener=opener)
    assert 0 <= other["WA"] <= 1
    assert json.loads((tmp_path / "run.json").read_text())["config"]["method"] == name
