"""The packaged published figures: format, and cells typed here from a second reading of the seed.

The expected cells below were typed by hand from ``../shared/seeds/002_a692a746aed8bfc4.txt``
(seed line numbers given), independently of the CSV; conditions are the AVAILABLE modalities.
"""
import math

import pandas as pd
import pytest

from hardymer.reports.published import (CONDITIONS, DATASETS, KEY, METRICS, PublishedDataError,
                                           load_published, published_table)

HM_CMP = "HARDY-MER (ACM MM 2025) comparison table"
HM_ABL = "HARDY-MER (ACM MM 2025) ablation table"
MK_CMP = "MoMKE (ACM MM 2024) comparison table"
MK_ABL = "MoMKE (ACM MM 2024) ablation table"
PRIMD = "PriMD (arXiv 2608.30563) comparison table"   # from the paper, not the seeds


@pytest.fixture(scope="module")
def df():
    return load_published()


def cell(df, source, dataset, method, condition, metric):
    sel = df[(df["source"] == source) & (df["dataset"] == dataset) & (df["method"] == method)
             & (df["condition"] == condition) & (df["metric"] == metric)]
    assert len(sel) == 1, (source, dataset, method, condition, metric, len(sel))
    return float(sel["value"].iloc[0])


def test_loads_and_every_row_is_known(df):
    assert len(df) > 700
    assert set(df["dataset"]) == set(DATASETS)
    assert set(df["condition"]) <= set(CONDITIONS)
    for ds, g in df.groupby("dataset"):
        assert set(g["metric"]) <= set(METRICS[ds])
    assert set(df["source"]) == {HM_CMP, HM_ABL, MK_CMP, MK_ABL, PRIMD}
    seeds = df["source"] != PRIMD
    assert df.loc[seeds, "seed"].str.startswith("002_a692a746aed8bfc4.txt lines ").all()
    assert df.loc[~seeds, "seed"].str.startswith("not in the seeds: PriMD paper").all()


def test_values_are_fractions_or_noted_missing(df):
    present = df["value"].notna()
    assert df.loc[present, "value"].between(0.0, 1.0).all()
    missing = df[~present]
    # Only the '-' cells of MoMKE's IEMOCAP baselines at {a,t,v}: 4 methods x WA/UA.
    assert len(missing) == 8
    assert set(missing["condition"]) == {"atv"} and set(missing["source"]) == {MK_CMP}
    assert missing["note"].str.startswith("missing cell").all()
    # MoMKE prints percent (converted, and said so), HARDY-MER fractions (as printed).
    converted = df["scale_note"].str.startswith("converted from percent")
    assert (converted == (df["source"].str.startswith(("MoMKE", "PriMD")) & present)).all()


def test_no_duplicate_keys(df):
    assert not df.duplicated(list(KEY)).any()


# (source, dataset, method, condition, metric, value) typed from the seed.
SECOND_READING = [
    (HM_CMP, "iemocap4", "cpm-nets", "a", "WA", 0.4685),   # line 585
    (HM_CMP, "iemocap4", "cpm-nets", "a", "UA", 0.5172),   # line 585
    (HM_CMP, "iemocap6", "gcnet", "t", "UA", 0.5562),      # line 594
    (HM_CMP, "iemocap6", "hardymer", "a", "WA", 0.5158),   # line 597 (label printed 'CMUMOSEI')
    (HM_CMP, "mosei", "cif-mmin", "v", "F1", 0.6266),      # line 605
    (HM_CMP, "iemocap6", "hardymer", "av", "UA", 0.4745),  # line 636
    (HM_CMP, "mosei", "momke", "tv", "ACC", 0.8690),       # line 644
    (HM_ABL, "iemocap4", "hardymer w/o h", "av", "WA", 0.6889),                  # line 666
    (HM_ABL, "iemocap4", "hardymer w/o fine-tuning features", "avg", "UA", 0.7071),  # line 668
    (MK_CMP, "iemocap4", "mctn", "at", "UA", 0.6946),      # line 388, 5th pair {a,t}
    (MK_CMP, "iemocap4", "mran", "tv", "UA", 0.722),       # line 391, printed 72.2
    (MK_CMP, "mosi", "imder", "v", "ACC", 0.6130),         # line 398, 3rd pair {v}
    (MK_CMP, "mosei", "momke", "atv", "F1", 0.8703),       # line 405
    (MK_ABL, "mosi", "momke w/o router", "a", "F1", 0.5856),                     # line 428
    (MK_ABL, "iemocap4", "momke w/o experts mixing training", "tv", "WA", 0.7699),  # line 422
    # PriMD's Table 1 as ../shared/spec/baselines-more.md section 6 prints it.
    (PRIMD, "iemocap4", "primd", "v", "WA", 0.6477),
    (PRIMD, "iemocap4", "primd", "avg", "UA", 0.7728),
    (PRIMD, "iemocap6", "primd", "avg", "WA", 0.5813),
    (PRIMD, "mosei", "primd", "at", "F1", 0.8769),
]


@pytest.mark.parametrize("source,dataset,method,condition,metric,expected", SECOND_READING)
def test_cells_from_a_second_reading(df, source, dataset, method, condition, metric, expected):
    assert cell(df, source, dataset, method, condition, metric) == pytest.approx(expected, abs=1e-9)


def test_missing_cell_is_nan(df):
    assert math.isnan(cell(df, MK_CMP, "iemocap4", "mmin", "atv", "WA"))


# HARDY-MER's Delta_Sota rows (seed lines 591, 598, 608, 630, 637, 646): HARDY-MER minus the best
# baseline, per (dataset, condition) as (WA, UA) or (ACC, F1). They check the whole table.
DELTA = {("iemocap4", "a"): (0.0312, 0.0366), ("iemocap4", "v"): (0.0523, 0.0800),
         ("iemocap4", "t"): (0.0519, 0.0503), ("iemocap6", "a"): (0.0107, 0.0176),
         ("iemocap6", "v"): (0.0324, 0.0152), ("iemocap6", "t"): (0.0480, 0.0176),
         ("mosei", "a"): (0.0226, 0.0308), ("mosei", "v"): (0.0127, 0.0025),
         ("mosei", "t"): (0.0110, 0.0110), ("iemocap4", "at"): (0.0264, 0.0255),
         ("iemocap4", "av"): (0.0562, 0.0828), ("iemocap4", "tv"): (0.0355, 0.0433),
         ("iemocap6", "at"): (0.0200, 0.0104), ("iemocap6", "av"): (0.0426, 0.0337),
         ("iemocap6", "tv"): (0.0174, 0.0031), ("mosei", "at"): (-0.0090, -0.0128),
         ("mosei", "av"): (0.0245, 0.0204), ("mosei", "tv"): (-0.0118, -0.0152)}


def test_hardymer_table_matches_its_delta_rows(df):
    t = df[df["source"] == HM_CMP]
    for (ds, cond), deltas in DELTA.items():
        for metric, delta in zip(METRICS[ds][:2], deltas):
            g = t[(t["dataset"] == ds) & (t["condition"] == cond) & (t["metric"] == metric)]
            ours = g.loc[g["method"] == "hardymer", "value"].item()
            best = g.loc[g["method"] != "hardymer", "value"].max()
            assert ours - best == pytest.approx(delta, abs=1e-9), (ds, cond, metric)


def test_hardymer_ablation_average_is_the_row_mean(df):
    t = df[df["source"] == HM_ABL].pivot(index=["method", "metric"], columns="condition",
                                         values="value")
    mean = t[["a", "t", "v", "at", "av", "tv"]].mean(axis=1)
    assert (mean - t["avg"]).abs().max() <= 5e-5 + 1e-12


def test_published_table_is_methods_by_conditions():
    t = published_table("iemocap4", "WA", methods=["cpm-nets", "hardymer"], source="HARDY-MER (ACM")
    assert list(t.columns) == ["a", "t", "v", "at", "av", "tv", "avg"]
    assert list(t.index) == [(HM_CMP, "cpm-nets"), (HM_CMP, "hardymer"), (HM_ABL, "hardymer")]
    assert t.loc[(HM_CMP, "cpm-nets"), "a"] == pytest.approx(0.4685)
    with pytest.raises(ValueError, match="ACC"):
        published_table("iemocap4", "ACC")
    with pytest.raises(ValueError, match="imder"):
        published_table("iemocap6", "WA", methods=["imder"])


def test_malformed_file_names_file_row_and_field(tmp_path, df):
    rows = df.head(3).copy()
    rows["value"] = rows["value"].map(lambda v: f"{v:.4f}")
    rows.loc[rows.index[1], "condition"] = "{a}"
    path = tmp_path / "bad.csv"
    rows.to_csv(path, index=False)
    with pytest.raises(PublishedDataError, match=r"bad\.csv: line 3, field 'condition'"):
        load_published(path)
    rows.loc[rows.index[1], "condition"] = "t"
    rows.loc[rows.index[2], "value"] = "70.32"
    rows.to_csv(path, index=False)
    with pytest.raises(PublishedDataError, match=r"line 4, field 'value'.*fraction"):
        load_published(path)
    pd.DataFrame({"x": [1]}).to_csv(path, index=False)
    with pytest.raises(PublishedDataError, match="header"):
        load_published(path)
