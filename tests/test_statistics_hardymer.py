"""HARDY-MER on generated data (fixed seeds, margins; slow, bounded for CI).

Hardness: one fold of the iemocap4-shaped preset at reduced dims with the *clear* planting of
``bench/hardness_tracking.py`` (every planted utterance at full strength), a short teacher.
Measured with this budget (seed 0): pooled Spearman of mean h with planted hardness 0.55;
per two-modality condition 0.35-0.46 (docs/results.md). See docs/results.md for the default planting.
"""
import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
BENCH = Path(__file__).resolve().parents[1] / "bench" / "hardness_tracking.py"


def _bench():
    spec = importlib.util.spec_from_file_location("hardness_tracking", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def frame():
    df, _ = _bench().hardness_frame(clear=True)
    return df


def test_hardness_tracks_planted_hardness(frame):
    from hardymer.reports.hardness import pooled_spearman, summarize
    s = summarize(frame).set_index("condition")
    for cond in ("at", "av", "tv"):
        assert s.loc[cond, "spearman_h_planted_effective"] > 0.3, s.loc[cond]
    pooled = pooled_spearman(frame, ["a", "t", "v", "at", "av", "tv"])
    assert pooled["h~planted"] > 0.45, pooled


def test_each_term_tracks_its_own_kind(frame):
    from hardymer.reports.hardness import pooled_spearman, summarize
    s = summarize(frame).set_index("condition")
    for cond in ("a", "t", "v", "at", "av", "tv"):
        assert (s.loc[cond, "spearman_hdir_planted_dir"]
                > s.loc[cond, "spearman_hind_planted_dir"] + 0.1), s.loc[cond]
    for cond in ("at", "av", "tv", "atv"):
        assert (s.loc[cond, "spearman_hind_planted_ind"]
                > s.loc[cond, "spearman_hdir_planted_ind"] + 0.1
                if cond != "atv" else s.loc[cond, "spearman_hind_planted_ind"] > 0.15), s.loc[cond]
    pooled = pooled_spearman(frame, ["a", "t", "v", "at", "av", "tv"])
    assert pooled["h_dir~planted_dir"] > pooled["h_ind~planted_dir"]
    assert pooled["h_ind~planted_ind"] > pooled["h_dir~planted_ind"]


def test_supports_agree_with_labels_more_than_chance(frame):
    from hardymer.reports.hardness import summarize
    s = summarize(frame).set_index("condition").support_label_agreement
    # chance (random training samples): sum of squared class priors, about 0.27. Measured:
    # a 0.45, t 0.60, v 0.37, at 0.65, av 0.50, tv 0.62, atv 0.66.
    assert (s > 0.33).all(), s
    assert s["t"] > s["a"] > s["v"] and s["atv"] >= s[["a", "t", "v"]].max(), s


def _accuracy_bench():
    path = BENCH.parent / "accuracy_table.py"
    spec = importlib.util.spec_from_file_location("accuracy_table", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


BOUNDED = ["model.hidden=32", "model.depth=1", "train.lr=1e-3", "train.batch_size=8"]


def test_hardymer_against_momke_on_generated_data_bounded():
    """The bounded form CI runs (about 80 s on 2 cores): dims 32/64/64, width 32, depth 1,
    4 + 6 epochs (teacher too), 10 fine-tuning epochs; one fold, all seven conditions.

    Measured with this budget, HARDY-MER minus MoMKE over the six incomplete conditions:
    +1.75 / +1.37 / +1.49 WA points (seeds 0 / 1 / 2); HARDY-MER's weakest condition 46.2-47.4
    (v). A regression guard, not the paper's claim: HARDY-MER clearly above chance everywhere
    and not below MoMKE at this budget.
    """
    bench = _accuracy_bench()
    configs = {"momke": ("momke", BOUNDED + ["train.epochs=[4,6]"]),
               "hardymer": ("hardymer", BOUNDED + ["train.epochs=[4,6]",
                                                   "model.teacher_epochs=[4,6]",
                                                   "model.finetune_epochs=10"])}
    df = bench.run_grid("iemocap4", (32, 64, 64), [0], configs, 0, None)
    hardy = df[df.variant == "hardymer"].set_index("condition").WA
    assert (hardy > 100 * 0.31 + 10).all(), hardy  # majority class: 31 %
    avg = df[df.condition != "atv"].groupby("variant").WA.mean()
    assert -0.5 < avg["hardymer"] - avg["momke"] < 4.0, avg


@pytest.mark.heavy
def test_hardymer_against_momke_on_generated_data():
    """The full-size form (about 5-6 min on 2 cores; ``pytest -m heavy``). A regression guard,
    not the paper's claim.

    The paper's claim (HARDY-MER above MoMKE on average over the six incomplete conditions)
    does not hold reliably on the generated data at this budget: seed 0 +0.7, seed 1 -0.9
    points (docs/results.md has the three-seed table). What holds on every seed measured:
    HARDY-MER clearly above chance under every condition and within 1.5 points of MoMKE.
    """
    bench = _accuracy_bench()
    df = bench.run("iemocap4", (64, 128, 128), [0], ["momke", "hardymer"], 0, None)
    hardy = df[df.variant == "hardymer"].set_index("condition").WA
    assert (hardy > 100 * 0.31 + 10).all(), hardy  # majority class: 31 %
    avg = df[df.condition != "atv"].groupby("variant").WA.mean()
    assert abs(avg["hardymer"] - avg["momke"]) < 1.5, avg
