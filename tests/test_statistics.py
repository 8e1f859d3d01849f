"""Honest statistics on the generated data (fixed seeds, margins).

One fold of the IEMOCAP-shaped preset at reduced dims (a 64 / t 128 / v 128), MoMKE at reduced
width and a short budget, trained once per condition with stage 1 shared. Bounded to about a
minute on 2 cores; marked slow so a quick local run can skip it (CI runs it).
"""
import numpy as np
import pytest

from hardymer.data.synthetic import generate
from hardymer.protocol import INCOMPLETE_CONDITIONS, all_fixed_conditions
from hardymer.runs.config import load_run_config
from hardymer.runs.experiment import run_experiment

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    ds = generate("iemocap4", seed=0, dims=(64, 128, 128))
    conds = all_fixed_conditions(ds.modalities)
    out = {}
    for method, extra in (("momke", ["train.epochs=[6,8]", "model.hidden=64", "model.depth=2"]),
                          ("zero-fill", ["train.epochs=[14]", "model.hidden=64"])):
        cfg = load_run_config(method, ds.family, extra + ["train.lr=1e-3", "train.batch_size=8"])
        recs = run_experiment(cfg, ds, conds, [0], tmp_path_factory.mktemp(method),
                              progress=False)
        out[method] = {r["condition"]: r["test_WA"] for r in recs}
    chance = np.bincount(ds.labels).max() / len(ds.labels)
    return out, chance


def test_momke_beats_chance_under_every_condition(results):
    res, chance = results
    for cond, wa in res["momke"].items():
        assert wa > chance + 0.10, (cond, wa, chance)


def test_single_modality_order_t_a_v(results):
    wa = results[0]["momke"]
    assert wa["t"] > wa["a"] + 0.02 > wa["v"] + 0.04, wa


def test_full_beats_every_single_modality(results):
    wa = results[0]["momke"]
    assert wa["atv"] > max(wa["a"], wa["t"], wa["v"]) + 0.02, wa


def test_momke_not_worse_than_zero_fill_on_average(results):
    res, _ = results
    mean = {m: np.mean([res[m][c] for c in INCOMPLETE_CONDITIONS]) for m in res}
    assert mean["momke"] >= mean["zero-fill"], mean
