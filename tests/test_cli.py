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
    searched = json.loads((out / "fold0" / "at" / "curriculum" / "database.json").read_text())
    assert searched["kind"] == "flat" and searched["n"] > 0        # the index the plans used
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


@pytest.mark.browser
def test_hardness_explorer_in_a_real_browser(hardy_run, chrome, tmp_path):
    """hardness.html in headless Chromium: images decode; the 20 hardest then 20 easiest per
    condition come first; choosing a condition filters; a header click sorts; a click on a row
    opens its supports (their labels and distances as in hardness.csv); "show all" shows every
    training utterance; no console error. Screenshot in tmp_path."""
    import pandas as pd
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from conftest import cell_texts, console_errors
    _, out = hardy_run
    res = invoke("hardness", out, "--out", tmp_path / "h", "--html")
    assert res.exit_code == 0, res.output
    df = pd.read_csv(tmp_path / "h" / "hardness.csv", keep_default_na=False)
    d = chrome
    d.get((tmp_path / "h" / "hardness.html").as_uri())
    assert d.execute_script("return document.images.length") == 2
    assert d.execute_script(
        "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    heads = [h.text for h in d.find_elements(By.CSS_SELECTOR, "div.hx thead th")]

    def rows():
        return cell_texts(d, "div.hx tbody tr.hx-row")
    c, h, shown = heads.index("condition"), heads.index("h"), heads.index("shown")
    first = rows()
    assert len(first) == 80 and [r[c] for r in first] == ["at"] * 40 + ["v"] * 40
    at = df[df.condition == "at"].h
    hs = [float(r[h]) for r in first[:40]]
    assert hs[:20] == sorted(hs[:20], reverse=True) and hs[0] == pytest.approx(at.max(), abs=1e-4)
    assert hs[20] == pytest.approx(at.min(), abs=1e-4) and first[20][shown] == "easiest 1"
    Select(d.find_element(By.CSS_SELECTOR, "select.hx-filter")).select_by_value("v")
    assert {r[c] for r in rows()} == {"v"} and len(rows()) == 40
    head_h = d.find_elements(By.CSS_SELECTOR, "div.hx thead th")[h]
    head_h.click()
    up = [float(r[h]) for r in rows()]
    head_h.click()
    assert up == sorted(up) and [float(r[h]) for r in rows()] == sorted(up, reverse=True)
    row = d.find_elements(By.CSS_SELECTOR, "div.hx tbody tr.hx-row")[0]
    uid = row.find_elements(By.TAG_NAME, "td")[heads.index("utterance_id")].text
    row.click()
    d.find_element(By.CSS_SELECTOR, "tr.hx-detail")
    want = df[(df.condition == "v") & (df.utterance_id == uid)].iloc[0]
    sup = cell_texts(d, "tr.hx-detail table tr")[1:]
    assert [s[1] for s in sup] == want.support_ids.split(";")
    assert [s[2] for s in sup] == want.support_label_names.split(";")
    assert [float(s[3]) for s in sup] == pytest.approx(
        [float(x) for x in want.support_distances.split(";")], abs=1e-4)
    row.click()
    assert not d.find_elements(By.CSS_SELECTOR, "tr.hx-detail")        # a second click closes
    d.find_element(By.CSS_SELECTOR, "input.hx-all").click()
    assert len(rows()) == (df.condition == "v").sum()
    find = d.find_element(By.CSS_SELECTOR, "input.hx-find")
    find.send_keys(uid)
    assert [r[heads.index("utterance_id")] for r in rows()] == [uid]
    assert console_errors(d) == []
    d.save_screenshot(str(tmp_path / "explorer.png"))
    assert (tmp_path / "explorer.png").stat().st_size > 10_000


def test_export_writes_a_self_contained_folder_with_a_model_card(hardy_run, tmp_path):
    """A HARDY-MER export on generated data: weights only, the fold's training utterances as
    its own data, plans renumbered onto them (same hardness per utterance), a model card that
    says the data are generated; predict refuses it as it refuses the run (no extractors)."""
    import numpy as np
    from hardymer.data import open_data
    from hardymer.models.hardymer.plan import first_plan
    from hardymer.inference import PredictError
    import hardymer
    _, out = hardy_run
    exp = tmp_path / "export"
    res = invoke("export", out, "--out", exp)          # --fold defaults to the run's first
    assert res.exit_code == 0, res.output
    meta = json.loads((exp / "export.json").read_text())
    assert meta["format"] == "hardymer-export" and meta["fold"] == 0
    assert meta["conditions"] == ["at", "v"] and meta["skipped"] == []
    data, src = open_data(str(exp / "data")), open_data(Run(out).data)
    assert data.n_utterances == meta["rows"]
    ids = data.utterances.utterance_id.to_numpy()
    for cond in ("at", "v"):
        a, b = first_plan(out / "fold0" / cond), first_plan(exp / "fold0" / cond)
        uid = src.utterances.utterance_id.to_numpy()
        assert list(ids[b.ids]) == list(uid[a.ids]) and np.array_equal(a.h, b.h)
        assert set(uid[a.ids]) == set(ids)      # exactly the training utterances are exported
        keep = b.support_ids >= 0
        assert list(ids[b.support_ids[keep]]) == list(uid[a.support_ids[keep]])
        assert np.array_equal(np.asarray(data.features["a"][b.ids]),
                              np.asarray(src.features["a"][a.ids]))
    card = (exp / "MODEL_CARD.md").read_text()
    for text in ("# hardymer on synth-tiny, fold 0", "synthetic-data", "Generated by hardymer",
                 "| at | ", "| v | ", "Selection protocol `val`", "## Intended use"):
        assert text in card, text
    assert not list(exp.rglob("last.safetensors"))[0].read_bytes().count(b"optim.")
    with pytest.raises(PredictError, match="not made by `hardymer extract`"):
        hardymer.load(exp)
    res = invoke("export", out, "--out", exp)
    assert res.exit_code == 2 and "--overwrite" in res.output
    assert invoke("export", out, "--out", exp, "--overwrite").exit_code == 0
    res = invoke("export", out, "--out", tmp_path / "e2", "--fold", 3)
    assert res.exit_code == 2 and "trained folds: [0]" in res.output
    res = invoke("export", exp, "--out", tmp_path / "e3")
    assert res.exit_code == 2 and "already an export" in res.output


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
    assert "Hardness explorer: hardymer" in (out / "report" / "report.html").read_text()


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
