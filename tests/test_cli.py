"""The command line as a user runs it: synth -> train -> evaluate, errors, help."""
import json

import pytest
from typer.testing import CliRunner

from hardymer.cli.main import app
from hardymer.runs.layout import Run

runner = CliRunner()
FAST = ["--set", "train.epochs=[2,2]", "--set", "model.hidden=16", "--set", "model.depth=1",
        "--no-progress"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    res = invoke("synth", "tiny", "--out", root / "data", "--seed", 3)
    assert res.exit_code == 0, res.output
    out = root / "run"
    res = invoke("train", "--data", root / "data", "--method", "momke", "--condition", "a,at",
                 "--fold", 0, "--out", out, *FAST)
    assert res.exit_code == 0, res.output
    return root, out, res.output


def test_train_prints_table_and_writes_report(run_dir):
    _, out, output = run_dir
    assert "| method | condition |" in output and "WA" in output and "UA" in output
    assert "Selection protocol: val" in output
    for name in ("results.csv", "results.md", "results.png", "results.sqlite", "run.json"):
        assert (out / name).is_file(), name


def test_evaluate_json_keys_match_training(run_dir):
    _, out, _ = run_dir
    res = invoke("evaluate", out, "--condition", "at", "--json")
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    assert {"WA", "UA", "F1"} <= set(got) and got["protocol"] == "val"
    rec = Run(out).records()
    at = next(r for r in rec if r["condition"] == "at")
    assert got["WA"] == pytest.approx(at["test_WA"])


def test_evaluate_under_another_condition_needs_trained_on(run_dir):
    _, out, _ = run_dir
    res = invoke("evaluate", out, "--condition", "t")
    assert res.exit_code == 2 and "--trained-on" in res.output
    res = invoke("evaluate", out, "--condition", "t", "--trained-on", "at", "--json")
    assert res.exit_code == 0 and json.loads(res.output)["per_fold"][0]["condition"] == "t"


def test_rerun_resumes_without_training(run_dir):
    root, out, _ = run_dir
    before = (out / "fold0" / "a" / "result.json").stat().st_mtime_ns
    res = invoke("train", "--data", root / "data", "--method", "momke", "--condition", "a",
                 "--fold", 0, "--out", out, *FAST)
    assert res.exit_code == 0, res.output
    assert (out / "fold0" / "a" / "result.json").stat().st_mtime_ns == before


@pytest.mark.parametrize("args,needle", [
    (["--condition", ""], "empty missing-modality condition"),
    (["--condition", "ax"], "unknown modality letter"),
    (["--method", "nope"], "unknown method"),
    (["--set", "model.bogus=1"], "bogus"),
])
def test_train_errors_are_clear(run_dir, args, needle):
    root, _, _ = run_dir
    res = invoke("train", "--data", root / "data", "--out", root / "bad", "--fold", 0, *args)
    assert res.exit_code == 2 and needle in res.output, res.output


def test_help_teaches():
    for cmd in ("train", "evaluate", "synth", "convert", "quickstart", "sweep", "report"):
        res = invoke(cmd, "--help")
        assert res.exit_code == 0 and len(res.output) > 300
    assert "Example" in invoke("train", "--help").output


def test_list_shows_registry():
    res = invoke("list")
    assert "momke" in res.output and "zero-fill" in res.output and "iemocap4" in res.output


HARDY = ["--set", "train.epochs=[1,2]", "--set", "model.hidden=16", "--set", "model.depth=1",
         "--set", "model.teacher_epochs=[1,2]", "--set", "model.finetune_epochs=2",
         "--no-progress"]


@pytest.fixture(scope="module")
def hardy_run(run_dir):
    root = run_dir[0]
    out = root / "hardy"
    res = invoke("train", "--data", root / "data", "--method", "hardymer", "--condition",
                 "at,v", "--fold", 0, "--out", out, *HARDY)
    assert res.exit_code == 0, res.output
    return root, out


def test_hardymer_train_and_evaluate_on_its_fine_tuned_features(hardy_run):
    _, out = hardy_run
    assert (out / "fold0" / "_shared" / "hardymer" / "finetune" / "finetune.json").is_file()
    assert (out / "fold0" / "_shared" / "hardymer" / "teacher" / "last.json").is_file()
    res = invoke("evaluate", out, "--condition", "at", "--json")
    assert res.exit_code == 0, res.output
    rec = Run(out).records()
    at = next(r for r in rec if r["condition"] == "at")
    assert json.loads(res.output)["WA"] == pytest.approx(at["test_WA"])


def test_hardness_command_writes_table_and_plots(hardy_run):
    import pandas as pd
    _, out = hardy_run
    res = invoke("hardness", out, "--out", out / "hardness")
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out / "hardness" / "hardness.csv")
    for col in ("h_dir", "h_ind", "h", "k_prime", "support_ids", "support_distances",
                "support_labels", "planted_hardness", "planted_effective"):
        assert col in df, col
    assert set(df.condition) == {"at", "v"}
    assert (df.k_prime == df.support_ids.fillna("").map(lambda s: len(s.split(";")) if s
                                                        else 0)).all()
    assert "support_label_agreement" in (out / "hardness" / "summary.md").read_text()
    for png in ("hardness_by_condition.png", "hardness_vs_planted.png"):
        assert (out / "hardness" / png).stat().st_size > 1000


def test_hardness_command_rejects_other_methods(run_dir):
    _, out, _ = run_dir
    res = invoke("hardness", out, "--out", out / "h")
    assert res.exit_code == 2 and "hardymer" in res.output


def test_ablation_flags(run_dir):
    root = run_dir[0]
    res = invoke("train", "--data", root / "data", "--method", "hardymer", "--condition", "t",
                 "--fold", 0, "--out", root / "abl", "--ablation", "no-h-dir",
                 "--ablation", "no-finetune", "--reference-compat", *HARDY)
    assert res.exit_code == 0, res.output
    cfg = json.loads((root / "abl" / "run.json").read_text())["config"]["model"]
    assert cfg["use_h_dir"] is False and cfg["finetune"] is False
    assert cfg["reference_compat"] is True
    res = invoke("train", "--data", root / "data", "--method", "hardymer", "--out",
                 root / "x", "--ablation", "no-such")
    assert res.exit_code == 2 and "no-h-dir" in res.output


@pytest.mark.slow
def test_quickstart_ends_with_the_report(tmp_path):
    """The README's main job, at a tiny budget: sweep, store, report, hardness."""
    out = tmp_path / "qs"
    res = invoke("quickstart", "--preset", "tiny", "--epochs", 1, "--out", out, "--no-progress")
    assert res.exit_code == 0, res.output
    assert "| hardymer |" in res.output and "Paired differences" in res.output
    for name in ("table.md", "table.tex", "published.md", "paired.md", "conditions.png",
                 "learning_curves.png", "hardness/hardymer/hardness.csv", "report.html"):
        assert (out / "report" / name).is_file(), name
    assert "report.html" in res.output.splitlines()[-1]     # the one page, named at the end


def test_reference_compat_end_to_end_with_the_papers_protocol(run_dir):
    root = run_dir[0]
    out = root / "reference"
    res = invoke("train", "--data", root / "data", "--method", "hardymer", "--condition", "at",
                 "--fold", 0, "--out", out, "--reference-compat", "--protocol", "paper", *HARDY)
    assert res.exit_code == 0, res.output
    assert "warning: model.finetune_scope=official-split" in res.output
    assert "test labels of folds 1-4 shaped these features" in res.output
    assert "feature fine-tuning: official-split" in res.output        # the report header
    cfg = json.loads((out / "run.json").read_text())["config"]
    assert cfg["model"]["sup_form"] == "views" and cfg["model"]["view_steps"] == "view"
    assert cfg["model"]["teacher_kind"] == "reference" and cfg["train"]["protocol"] == "paper"
    (rec,) = Run(out).records()
    assert rec["finetune_scope"] == "official-split" and rec["protocol"] == "paper"
    assert (out / "fold0" / "at" / "teacher" / "last.json").is_file()   # one per condition
    res = invoke("evaluate", out, "--condition", "at", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["WA"] == pytest.approx(rec["test_WA"])
    # Training uses per-batch hardness; the plan of the reference teacher's per-utterance
    # terms is still stored, so a user can look at which samples it found hard.
    res = invoke("hardness", out, "--out", root / "reference-hardness")
    assert res.exit_code == 0, res.output


def test_reference_compat_without_its_leak(run_dir):
    root = run_dir[0]
    out = root / "reference-fold"
    res = invoke("train", "--data", root / "data", "--method", "hardymer", "--condition", "t",
                 "--fold", 0, "--out", out, "--set", "model.finetune_scope=fold",
                 "--reference-compat", *HARDY)
    assert res.exit_code == 0, res.output
    assert "official-split" not in res.output
    (rec,) = Run(out).records()
    assert rec["finetune_scope"] == "fold"
    assert json.loads((out / "run.json").read_text())["config"]["model"]["sup_form"] == "views"
