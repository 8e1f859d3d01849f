"""Run folders written before the layered layout (tests/fixtures/make_old_runs.sh: records in
results.jsonl, no results.sqlite) open for evaluate, hardness and resume, unchanged."""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from hardymer.cli.main import app
from hardymer.runs.layout import Run

FIXTURES = Path(__file__).parent / "fixtures" / "old_runs"
SMALL = ["--set", "train.epochs=[1,2]", "--set", "model.hidden=8", "--set", "model.depth=1",
         "--set", "model.heads=1"]
EXTRA = {"momke": [], "hardymer": ["--set", "model.teacher_epochs=[1,1]",
                                   "--set", "model.finetune_epochs=1"]}


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def old(tmp_path):
    shutil.copytree(FIXTURES, tmp_path / "old")
    return tmp_path / "old"


def _jsonl(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "results.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["momke", "hardymer"])
def test_old_run_evaluates_to_its_recorded_numbers(old, method):
    folder = old / method
    assert not (folder / "results.sqlite").exists()
    recorded = {r["condition"]: r for r in _jsonl(folder)}
    got = {(r["condition"], r["fold"]): r for r in Run(folder).records()}
    assert set(got) == {("a", 0), ("at", 0)}
    res = invoke("evaluate", folder, "--condition", "at", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["WA"] == pytest.approx(recorded["at"]["test_WA"])


def test_old_hardymer_run_shows_its_hardness(old, tmp_path):
    res = invoke("hardness", old / "hardymer", "--out", tmp_path / "h")
    assert res.exit_code == 0, res.output
    df = pd.read_csv(tmp_path / "h" / "hardness.csv")
    assert set(df.condition) == {"a", "at"} and df.h.between(0, 1).all()


@pytest.mark.parametrize("method", ["momke", "hardymer"])
def test_old_run_resumes_and_moves_its_records_into_the_store(old, method):
    folder = old / method
    before = {r["condition"]: r["test_WA"] for r in _jsonl(folder)}
    res = invoke("train", "--data", "synth:tiny", "--method", method, "--condition", "a,at",
                 "--fold", 0, "--out", folder, "--no-progress", *SMALL, *EXTRA[method])
    assert res.exit_code == 0, res.output
    assert (folder / "results.sqlite").is_file() and not (folder / "results.jsonl").exists()
    after = {r["condition"]: r["test_WA"] for r in Run(folder).records()}
    assert after == before   # finished cells read back, not retrained


def test_records_survive_a_migration_cut_short(old):
    """A kill after the store got some rows but before results.jsonl went: nothing is lost."""
    folder = old / "momke"
    old_recs = _jsonl(folder)
    run = Run(folder)
    store = run.store                  # the store exists, empty: the kill came before inserts
    assert len(store) == 0
    got = {r["condition"]: r["test_WA"] for r in run.records()}
    assert got == {r["condition"]: r["test_WA"] for r in old_recs}


def test_a_cell_read_back_keeps_its_row(old):
    folder = old / "momke"
    args = ["train", "--data", "synth:tiny", "--method", "momke", "--condition", "a,at",
            "--fold", 0, "--out", folder, "--no-progress", *SMALL]
    assert invoke(*args).exit_code == 0
    first = Run(folder).store.frame().set_index("condition")["finished_at"]
    assert invoke(*args).exit_code == 0
    again = Run(folder).store.frame().set_index("condition")["finished_at"]
    assert first.to_dict() == again.to_dict()


def test_old_sweep_reports_with_its_hardness(old, tmp_path, monkeypatch):
    monkeypatch.chdir(old)            # its store records run folders relative to here
    res = invoke("report", "old_sweep", "--out", tmp_path / "r")
    assert res.exit_code == 0, res.output
    table = (tmp_path / "r" / "table.md").read_text()
    assert "| momke |" in table and "| hardymer |" in table
    assert (tmp_path / "r" / "hardness" / "hardymer" / "hardness.csv").is_file()
