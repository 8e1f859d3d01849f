"""Sweeps and reports: a grid run, killed part-way, resumed without recomputing, reported; the
report's numbers are the store's."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import cell_texts, console_errors
from hardymer.cli.main import app
from hardymer.runs.store import ResultsStore
from hardymer.reports.sweep import ReportError, write_sweep_report
from hardymer.runs import sweep as sweep_mod
from hardymer.runs.sweep import Backend, load_spec, run_sweep

SETS = ["momke:train.epochs=[1,2]", "momke:model.hidden=16", "momke:model.depth=1",
        "zero-fill:train.epochs=[3]", "train.lr=1e-3", "train.batch_size=8"]


def tiny_spec(**kw):
    args = dict(data="synth:tiny", methods=["momke", "zero-fill"], conditions=["at", "random:0.4"],
                seeds=[0, 1], folds="0", set=SETS)
    args.update(kw)
    return load_spec(None, **args)


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A sweep interrupted after 3 stored cells, then resumed to the end."""
    out = tmp_path_factory.mktemp("sweep")
    seen = []

    def kill_after_3(row):
        seen.append(row)
        if len(seen) == 3:
            raise Killed
    with pytest.raises(Killed):
        run_sweep(tiny_spec(), out, progress=False, on_cell=kill_after_3)
    before = ResultsStore(out / "results.sqlite").frame()
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/fold0/*/result.json")}
    run_sweep(tiny_spec(), out, progress=False)
    return out, before, stamps


def test_killed_sweep_resumes_without_recomputing(finished, monkeypatch):
    out, before, stamps = finished
    assert len(before) == 3
    after = ResultsStore(out / "results.sqlite").frame()
    assert len(after) == 2 * 2 * 2                                    # methods × conds × seeds
    keep = after.merge(before, on=["variant", "condition", "fold", "seed"], suffixes=("", "_0"))
    assert (keep["test_WA"] == keep["test_WA_0"]).all()               # nothing lost or changed
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # finished: not retrained
    calls = []
    monkeypatch.setattr(sweep_mod, "_run_unit", lambda *a, **k: calls.append(a) or [])
    run_sweep(tiny_spec(), out, progress=False)                       # all done: nothing runs
    assert calls == []


def test_store_rows_carry_provenance(finished):
    out, _, _ = finished
    df = ResultsStore(out / "results.sqlite").frame()
    row = df.iloc[0]
    assert row["protocol"] == "val" and row["data"] == "synth:tiny" and row["generated"] == 1
    assert json.loads(row["config"])["method"] == row["method"]
    assert {"torch", "hardymer", "numpy"} <= set(json.loads(row["versions"]))
    assert row["seconds"] > 0 and {"val_WA", "test_WA", "test_UA", "test_F1"} <= set(df.columns)


def test_report_numbers_are_the_stores(finished, tmp_path):
    out, _, _ = finished
    res = write_sweep_report(out, tmp_path / "report", hardness=False)
    df = ResultsStore(out / "results.sqlite").frame()
    table = pd.read_csv(tmp_path / "report" / "table.csv").set_index("method")
    for method in ("momke", "zero-fill"):
        vals = df[(df.variant == method) & (df.condition == "at")]["test_WA"] * 100
        cell = table.loc[method, "at WA"].strip("*")
        mean, std = (float(x) for x in cell.split(" ± "))
        assert mean == pytest.approx(vals.mean(), abs=0.006)
        assert std == pytest.approx(vals.std(ddof=1), abs=0.006)
    # paired: momke − zero-fill over the one incomplete condition, per seed
    paired = pd.read_csv(tmp_path / "report" / "paired.csv").iloc[0]
    a = df[(df.variant == "momke") & (df.condition == "at")].sort_values("seed")["test_WA"]
    b = df[(df.variant == "zero-fill") & (df.condition == "at")].sort_values("seed")["test_WA"]
    assert paired["mean A − B"] == pytest.approx(100 * np.mean(a.values - b.values), abs=0.006)
    assert paired["pairs"] == 2
    md = (tmp_path / "report" / "table.md").read_text()
    for must in ("Selection: val", "Seeds: 0, 1", "Folds (session): 0", "hardymer 0.", "synth:tiny"):
        assert must in md
    assert "\\textbf" in (tmp_path / "report" / "table.tex").read_text()
    assert (tmp_path / "report" / "missing_rate.png").stat().st_size > 0
    assert (tmp_path / "report" / "conditions.png").stat().st_size > 0
    assert "Paired differences" in res["text"]


def test_learning_curves_are_the_cells_validation_logs(finished, tmp_path):
    """Per (method, condition, seed): the val WA of every selecting epoch, as logged."""
    from hardymer.reports.sweep import curve_frame
    out, _, _ = finished
    res = write_sweep_report(out, tmp_path / "report", hardness=False)
    assert res["paths"]["learning_curves.png"].stat().st_size > 0
    records = ResultsStore(out / "results.sqlite").records()
    df = curve_frame(records, "WA")
    assert len(df.groupby(["method", "condition", "seed"])) == 2 * 2 * 2
    assert sorted(df[df.method == "momke"]["epoch"].unique()) == [2, 3]   # stage 2 selects
    assert sorted(df[df.method == "zero-fill"]["epoch"].unique()) == [1, 2, 3]
    r = next(r for r in records if r["method"] == "momke" and r["condition"] == "at")
    log = [json.loads(x) for x in (Path(r["run_dir"]) / "fold0" / "at" / "metrics.jsonl"
                                   ).read_text().splitlines()]
    got = df[(df.method == "momke") & (df.condition == "at") & (df.seed == r["seed"])]
    assert got["value"].tolist() == [x["val_WA"] for x in log if "val_WA" in x]


def test_html_report_is_one_self_contained_page_with_the_stores_numbers(finished, tmp_path):
    import base64
    import re
    from html.parser import HTMLParser
    out, _, _ = finished
    res = write_sweep_report(out, tmp_path / "report", hardness=False, html=True)
    page = res["paths"]["report.html"].read_text()

    class Tags(HTMLParser):
        def __init__(self):
            super().__init__()
            self.order, self.imgs, self.links, self.cells = [], [], [], []
            self._in_td = False

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            self.order.append((tag, a.get("class")))
            if tag == "img":
                self.imgs.append(a["src"])
            self.links += [v for k, v in attrs if k in ("href", "src") and tag != "img"]
            if tag == "td":
                self._in_td = True
                self.cells.append("")

        def handle_endtag(self, tag):
            if tag == "td":
                self._in_td = False

        def handle_data(self, data):
            if self._in_td:
                self.cells[-1] += data
    t = Tags()
    t.feed(page)
    # opens with the title and the provenance, before any table
    assert [x for x in t.order if x[0] in ("h1", "p", "table")][:3] == [
        ("h1", None), ("p", "provenance"), ("p", "note")]
    assert "Selection: val" in page and "Seeds: 0, 1" in page and "synth:tiny" in page
    # nothing fetched: every image inlined as a PNG, no external script, link or stylesheet
    assert len(t.imgs) == 3 and t.links == []                  # conditions, rate, curves
    for src in t.imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r"https?://", page)
    # the table's cells are the CSV's, and the tables are sortable
    table = pd.read_csv(tmp_path / "report" / "table.csv")
    for v in table["at WA"]:
        assert v.strip("*") in t.cells
    assert page.count('class="sortable"') == 3 and "addEventListener(\"click\"" in page


def test_html_escapes_what_it_shows():
    from hardymer.reports.html import markdown_html, table_html
    df = pd.DataFrame({"method": ["<script>x</script>"], "WA": ["**75.2**"]})
    got = table_html(df)
    assert "<script>x" not in got and "&lt;script&gt;" in got and "<b>75.2</b>" in got
    md = markdown_html("## Title\n\nsome <b>text</b>\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    assert md.startswith("<h3>Title</h3>") and "&lt;b&gt;" in md and '<td class="num">1</td>' in md


@pytest.mark.browser
def test_html_report_in_a_real_browser(finished, tmp_path, chrome):
    """Headless Chromium opens report.html: every image decodes, a header click sorts the
    rows (again: reversed), and the console has no error. A screenshot is left in tmp_path."""
    from selenium.webdriver.common.by import By
    out, _, _ = finished
    page = write_sweep_report(out, tmp_path / "report", hardness=False, html=True)
    driver = chrome
    driver.get(page["paths"]["report.html"].as_uri())
    assert driver.execute_script("return document.images.length") == 3
    assert driver.execute_script(
        "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    table = driver.find_elements(By.CSS_SELECTOR, "table.sortable")[0]
    heads = table.find_elements(By.TAG_NAME, "th")
    col = [h.text for h in heads].index("at WA")

    def column(i):
        return [r.find_elements(By.TAG_NAME, "td")[i].text
                for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")]
    value = lambda t: float(t.split(" ± ")[0])  # noqa: E731
    heads[col].click()
    up = [value(t) for t in column(col)]
    heads[col].click()
    down = [value(t) for t in column(col)]
    assert up == sorted(up) and down == sorted(up, reverse=True) and up != down
    heads[0].click()
    assert column(0) == sorted(column(0))            # text columns sort as text
    assert console_errors(driver) == []
    driver.save_screenshot(str(tmp_path / "report.png"))
    assert (tmp_path / "report.png").stat().st_size > 10_000


@pytest.mark.browser
def test_report_html_hardness_explorer_in_a_real_browser(tmp_path, chrome):
    """A sweep with HARDY-MER: report.html holds its explorer; in headless Chromium every
    image decodes, choosing a condition filters the explorer's rows, a header click sorts
    them, and the console has no error."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    spec = tiny_spec(methods=["hardymer"], conditions=["at", "v"], seeds=[0],
                     set=["train.epochs=[1,1]", "model.hidden=16", "model.depth=1",
                          "model.teacher_epochs=[1,1]", "model.finetune_epochs=1"])
    run_sweep(spec, tmp_path / "s", progress=False)
    page = write_sweep_report(tmp_path / "s", tmp_path / "report", html=True)
    d = chrome
    d.get(page["paths"]["report.html"].as_uri())
    assert d.execute_script("return document.images.length") >= 4     # + the hardness plots
    assert d.execute_script(
        "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    heads = [h.text for h in d.find_elements(By.CSS_SELECTOR, "div.hx thead th")]
    c, h = heads.index("condition"), heads.index("h")

    def rows():
        return cell_texts(d, "div.hx tbody tr.hx-row")
    assert {r[c] for r in rows()} == {"at", "v"}
    Select(d.find_element(By.CSS_SELECTOR, "select.hx-filter")).select_by_value("at")
    assert {r[c] for r in rows()} == {"at"} and len(rows()) == 40
    d.find_elements(By.CSS_SELECTOR, "div.hx thead th")[h].click()
    up = [float(r[h]) for r in rows()]
    assert up == sorted(up)
    assert console_errors(d) == []
    d.save_screenshot(str(tmp_path / "report.png"))


def test_grid_clash_and_bad_input(finished, tmp_path):
    out, _, _ = finished
    with pytest.raises(ValueError, match="another data set, protocol or method"):
        run_sweep(tiny_spec(set=SETS + ["momke:model.router=false"]), out, progress=False)
    with pytest.raises(ValueError, match="no ablation 'no-h' .momke takes none.*hardymer: no-h-dir"):
        tiny_spec(methods=["momke:no-h"])
    with pytest.raises(ValueError, match="no method or variant named 'mmin'"):
        tiny_spec(set=["mmin:train.epochs=[1,1]"])
    with pytest.raises(ReportError, match="hardymer sweep"):
        write_sweep_report(tmp_path, tmp_path / "r")


def test_cli_sweep_from_config_file_with_parallel_workers(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("data: synth:tiny\nmethods:\n  - zero-fill\n"
                    "  - {name: wide, method: zero-fill, set: [model.hidden=64]}\n"
                    "conditions: [t]\nseeds: [0]\nfolds: '0'\n"
                    "set: ['train.epochs=[2]']\n")
    res = CliRunner().invoke(app, ["sweep", "--config", str(grid), "--out", str(tmp_path / "s"),
                                   "--workers", "2", "--no-progress"])
    assert res.exit_code == 0, res.output
    df = ResultsStore(tmp_path / "s" / "results.sqlite").frame()
    assert sorted(df.variant) == ["wide", "zero-fill"]
    assert "| wide |" in (tmp_path / "s" / "report" / "table.md").read_text()
    res = CliRunner().invoke(app, ["report", str(tmp_path / "nothing"), "--out",
                                   str(tmp_path / "r")])
    assert res.exit_code == 2 and "hardymer sweep" in res.output


def test_published_rows_match_method_and_ablation_names():
    from hardymer.reports.published import load_published
    from hardymer.reports.tables import summarize
    from hardymer.reports.sweep import published_comparison
    recs = [{"method": m, "base_method": "hardymer", "condition": "at", "fold": 0, "seed": 0,
             "test_WA": 0.5, "test_UA": 0.4, "test_F1": 0.45, "family": "iemocap",
             "n_classes": 4, "task": "classification", "generated": 0}
            for m in ("hardymer", "hardymer:no-h", "hardymer-wide", "hardymer:reference")]
    df, note = published_comparison(summarize(recs, "classification"), recs,
                                    ["hardymer", "hardymer:no-h", "hardymer-wide",
                                     "hardymer:reference"])
    pub = load_published().query("dataset == 'iemocap4' and condition == 'at' and metric == 'WA'")
    got = df.query("metric == 'WA'").set_index(["method", "source"])["published"]
    want_full = pub.query("method == 'hardymer'").set_index("source")["value"] * 100
    want_noh = pub.query("method == 'hardymer w/o h'")["value"].iloc[0] * 100
    assert got.loc["hardymer"].round(2).to_dict() == want_full.round(2).to_dict()
    assert float(got.loc["hardymer:no-h"].iloc[0]) == pytest.approx(want_noh, abs=0.005)
    assert "hardymer-wide" not in set(df["method"])          # a custom variant: no comparison
    # The reference code's form is compared with the paper's own row.
    assert got.loc["hardymer:reference"].round(2).to_dict() == want_full.round(2).to_dict()
    row = df.query("method == 'hardymer:no-h' and metric == 'WA'").iloc[0]
    assert row["ours − published"] == pytest.approx(50.0 - want_noh, abs=0.01)


def test_grid_file_scalars_and_duplicates(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text("data: synth:tiny\nmethods: zero-fill\nconditions: at\nseeds: 0\n"
                    "folds: [0, 1]\nset: train.epochs=[1]\n")
    spec = load_spec(grid)
    assert [v.name for v in spec.methods] == ["zero-fill"] and spec.conditions == ["at"]
    assert spec.seeds == [0] and spec.folds == "0,1" and spec.set == ["train.epochs=[1]"]
    spec = load_spec(None, data="synth:tiny", methods=["momke"], seeds=[1, 1, 0], folds="2,2")
    assert spec.seeds == [1, 0] and spec.folds == "2"
    with pytest.raises(ValueError, match="seeds"):
        load_spec(None, data="synth:tiny", methods=["momke"], seeds=["x"])


def test_method_definitions_are_checked_against_every_earlier_run(tmp_path):
    out = tmp_path / "s"
    quick = dict(conditions=["t"], seeds=[0], set=["train.epochs=[1]"])
    run_sweep(tiny_spec(methods=["zero-fill"], **quick), out, progress=False)
    run_sweep(tiny_spec(methods=["zero-fill"], **quick), out, progress=False)  # same: fine
    grid = json.loads((out / "sweep.json").read_text())
    assert [m["name"] for m in grid["methods"]] == ["zero-fill"]
    with pytest.raises(ValueError, match="method"):   # same name, another definition
        run_sweep(tiny_spec(methods=["zero-fill"], conditions=["t"], seeds=[1],
                            set=["train.epochs=[1]", "zero-fill:model.hidden=64"]),
                  out, progress=False)


def test_report_canonical_conditions_and_fair_pairs():
    from hardymer.reports.tables import canonical_condition
    from hardymer.reports.sweep import paired_differences
    assert [canonical_condition(c) for c in ("vt", "avt", "ta", "at", "random:0.3")] == \
        ["tv", "atv", "at", "at", "random:0.3"]
    # B lacks condition t for seed 1: that pair must not count (identical models -> 0).
    recs = [{"method": m, "condition": c, "fold": 0, "seed": s, "test_WA": v}
            for m in ("A", "B") for s in (0, 1) for c, v in (("a", 0.5), ("t", 0.9))
            if not (m == "B" and s == 1 and c == "t")]
    df, _ = paired_differences(recs, "classification", ["A", "B"])
    assert df.iloc[0]["pairs"] == 1 and df.iloc[0]["mean A − B"] == 0.0


def test_reference_variant_in_a_sweep_takes_the_users_changes(tmp_path):
    sets = ["hardymer:train.epochs=[1,1]", "hardymer:model.hidden=16", "hardymer:model.depth=1",
            "hardymer:model.teacher_epochs=[1,1]", "hardymer:model.finetune_epochs=1",
            "hardymer:model.finetune_scope=fold", "train.batch_size=8"]
    spec = load_spec(None, data="synth:tiny", methods=["hardymer:reference"], conditions=["t"],
                     seeds=[0], folds="0", set=sets)
    run_sweep(spec, tmp_path, progress=False)
    (row,) = ResultsStore(tmp_path / "results.sqlite").frame().to_dict("records")
    cfg = json.loads(row["config"])
    assert cfg["model"]["sup_form"] == "views" and cfg["model"]["finetune_scope"] == "fold"
    assert row["finetune_scope"] == "fold" and row["variant"] == "hardymer:reference"


def test_ray_backend_without_ray_names_the_extra(tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "ray", None)          # as if not installed
    with pytest.raises(ValueError, match=r'pip install -e "\.\[cluster\]"'):
        run_sweep(tiny_spec(), tmp_path / "s", progress=False, backend=Backend("ray"))
    assert not (tmp_path / "s").exists()                   # said before anything is written
    monkeypatch.setenv("WORLD_SIZE", "2")                 # under torchrun
    with pytest.raises(ValueError, match="start it without torchrun"):
        run_sweep(tiny_spec(), tmp_path / "s", progress=False)
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(ValueError, match="--address is for --backend ray"):
        run_sweep(tiny_spec(), tmp_path / "s", progress=False,
                  backend=Backend("local", address="auto"))


@pytest.mark.slow
def test_ray_sweep_killed_and_resumed_equals_the_local_backend(tmp_path):
    """Cells as Ray tasks on a local Ray with 2 CPUs (1 per cell): the driver is stopped
    after 3 stored cells (pending tasks cancelled), the same call again finishes; the store
    equals a local two-worker sweep's (one torch thread per cell in both) row for row."""
    ray = pytest.importorskip("ray", reason="the cluster extra: pip install -e '.[cluster]'")
    seen = []

    def kill_after_3(row):
        seen.append(row)
        if len(seen) == 3:
            raise Killed
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with pytest.raises(Killed):
            run_sweep(tiny_spec(), tmp_path / "ray", progress=False, on_cell=kill_after_3,
                      backend=Backend("ray", cpus=1))
        assert len(ResultsStore(tmp_path / "ray" / "results.sqlite")) == 3
        run_sweep(tiny_spec(), tmp_path / "ray", progress=False, backend=Backend("ray", cpus=1))
    finally:
        ray.shutdown()
    run_sweep(tiny_spec(), tmp_path / "local", progress=False, workers=2)
    got, want = (ResultsStore(tmp_path / d / "results.sqlite").frame() for d in ("ray", "local"))
    cols = ["variant", "condition", "fold", "seed", "selected_epoch"] + \
        [c for c in want if c.startswith(("val_", "test_"))]
    assert len(got) == 8
    pd.testing.assert_frame_equal(got[cols], want[cols])
