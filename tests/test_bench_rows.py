"""``bench/baselines_table.py --rows``: finished (method, seed) units are kept in a CSV and
never rerun, so a table can be made in parts (several sessions or machines)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))   # it imports its sibling accuracy_table
    spec = importlib.util.spec_from_file_location("baselines_table", BENCH / "baselines_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("accuracy_table", None)


def test_rows_are_appended_per_unit_and_finished_units_are_skipped(bench, tmp_path, monkeypatch):
    rows = tmp_path / "rows.csv"
    df = bench.accuracy_rows("tiny", (6, 10, 6), [0], ["zero-fill"], 0, None, rows, 1)
    assert len(df) == 7 and set(df.variant) == {"zero-fill"}
    stored = pd.read_csv(rows)
    assert list(stored.columns) == ["method", "seed", "condition", "WA", "UA", "s/epoch",
                                    "params (M)", "commit"]
    assert stored["s/epoch"].gt(0).all() and stored["WA"].between(0, 100).all()

    calls = []
    real = bench.unit_rows
    monkeypatch.setattr(bench, "unit_rows", lambda *a, **k: calls.append(a[2:4]) or real(*a, **k))
    again = bench.accuracy_rows("tiny", (6, 10, 6), [0], ["zero-fill"], 0, None, rows, 1)
    assert calls == [] and again.equals(df)

    # A unit with a missing condition (an interrupted append) is run again, once.
    pd.read_csv(rows).iloc[:-1].to_csv(rows, index=False)
    third = bench.accuracy_rows("tiny", (6, 10, 6), [0], ["zero-fill"], 0, None, rows, 1)
    assert calls == [("zero-fill", 0)] and len(third) == 7
    assert third.set_index("condition").WA.round(6).equals(df.set_index("condition").WA.round(6))
