"""``hardymer report``: a sweep's store turned into the papers' tables, comparisons and plots.

Writes into the report folder:

* ``table.{md,csv,tex}`` — the papers' layout: one row per method, per condition WA and UA
  (IEMOCAP) or ACC and F1 (CMU), the average of the six incomplete conditions, each cell
  mean ± std over seeds and folds, the best mean of each column in bold;
* ``published.{md,csv}`` — ours beside the figures transcribed from the papers
  (:mod:`hardymer.reports.published`) and the difference, for the methods and conditions
  both have;
* ``paired.{md,csv}`` — for every two methods run on the same folds and seeds: the mean
  difference of the primary metric (over the incomplete conditions both ran), a 95 % bootstrap
  interval and a paired t-test;
* ``conditions.png`` (bars with error bars), ``missing_rate.png`` (metric vs missing rate, when
  the sweep has ``random:p`` conditions) and, for HARDY-MER runs, ``hardness/<method>/``
  (hardness tables and histograms; in ``report.html`` also the hardness explorer);
* ``learning_curves.png`` — per method, the validation metric against the epoch for each
  condition (mean over folds, band = ± std over seeds), from the cells' ``metrics.jsonl``;
* ``summary.csv`` — every (method, condition, metric): mean, std, n;
* with ``--html``, ``report.html``: all of the above on one self-contained page (images
  inlined, sortable tables, no network).

Every table starts with how its numbers were made: data set, selection protocol, seeds, folds,
toolkit version.
"""
from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ..data import open_data
from ..data.validate import DataError
from ..fileio import atomic_write_text
from ..models import METHODS
from ..protocol.conditions import INCOMPLETE_CONDITIONS
from ..runs.layout import Run
from ..runs.sweep import SweepFolder
from ..training.trainer import read_history
from .hardness import InspectionError, explorer, inspect_run
from .html import Section, render
from .published import load_published
from .tables import (AVERAGE, canonical_condition, condition_order, plot_conditions, pyplot,
                     summarize, to_markdown)

PAPER_METRICS = {"classification": ("WA", "UA"), "regression": ("ACC", "F1")}
LOWER_IS_BETTER = {"MAE"}


def published_name(variant: str) -> str:
    """The published row a sweep method name compares with: the method itself (or the row its
    class names in ``published_as``: ``mran-like`` -> ``mran``), or for ``METHOD:ABLATION`` the
    row the method's ablation names (``hardymer w/o h_dir``)."""
    method, _, ablation = variant.partition(":")
    if method in METHODS:
        cls = METHODS.get(method)
        own = cls.published_as or method
        if not ablation:
            return own
        found = cls.ablations.get(ablation)
        if found is not None and found.published is not None:   # "": the method's own row
            return f"{own} {found.published}".strip()
    return variant


class ReportError(ValueError):
    """The sweep folder cannot be reported (message says why and what to do)."""


def write_sweep_report(sweep: Path, out: Path, hardness: bool = True,
                       trust_pickle: bool = False, html: bool = False) -> dict:
    """Build every table and plot of a sweep folder into ``out``; with ``html`` also
    ``report.html``, all of it on one self-contained page (:mod:`hardymer.reports.html`).

    ``trust_pickle`` lets the hardness section reopen reference-layout data (a label
    pickle); it is the caller's opt-in (``--trust-pickle``), never read from the folder.

    Returns ``{"text": markdown of the main tables, "paths": {name: Path}, "summary": df}``.
    """
    sweep, out = SweepFolder(sweep), Path(out)
    db = sweep.store_path
    if not db.is_file():
        raise ReportError(f"{db} not found: pass a folder made by `hardymer sweep`")
    store = sweep.store()
    records = [dict(r, condition=canonical_condition(r["condition"])) for r in store.records()]
    if not records:
        raise ReportError(f"{db} has no finished cells yet: run (or resume) the sweep first")
    datas = sorted({r["data"] for r in records})
    if len(datas) > 1:
        raise ReportError(f"{db} mixes data sets {datas}; one report per data set")
    out.mkdir(parents=True, exist_ok=True)
    grid = sweep.grid()
    order = _method_order(grid, records)
    overrides = {m["name"]: m.get("set", []) for m in grid.get("methods", [])}
    task = records[0]["task"]
    summary = summarize(records, task)
    paths: dict[str, Path] = {}
    header = provenance(records)

    table = paper_table(summary, task, order)
    parts = [("table", "Results", table)]
    published = published_comparison(summary, records, order, overrides)
    if published is not None:
        parts.append(("published", "Ours beside the published figures", published))
    paired = paired_differences(records, task, order)
    if paired is not None:
        parts.append(("paired", "Paired differences", paired))
    text = []
    for name, title, (df, note) in parts:
        md = f"## {title}\n\n{header}{note}\n\n{to_markdown(df)}"
        atomic_write_text(out / f"{name}.md", md)
        df.to_csv(out / f"{name}.csv", index=False)
        paths[f"{name}.md"], paths[f"{name}.csv"] = out / f"{name}.md", out / f"{name}.csv"
        # The comparison with the papers is long: the files hold it, the text points to it.
        text.append(md if name != "published" else
                    f"## {title}\n\n{len(df)} rows in {out / 'published.md'} "
                    f"(methods: {', '.join(dict.fromkeys(df['method']))}).\n")
    atomic_write_text(out / "table.tex", latex_table(table[0], header + table[1]))
    paths["table.tex"] = out / "table.tex"
    summary.to_csv(out / "summary.csv", index=False)
    paths["summary.csv"] = out / "summary.csv"

    fixed = summary[~summary["condition"].str.startswith("random:")]
    if len(fixed):
        ordered = _ordered(fixed, order)
        paths["conditions.png"] = plot_conditions(ordered, task, out / "conditions.png",
                                                  metrics=PAPER_METRICS[task],
                                                  title=_title(records))
    if summary["condition"].str.startswith("random:").any():
        paths["missing_rate.png"] = plot_missing_rate(summary, task, out / "missing_rate.png",
                                                      order)
    curves = learning_curves(records, task, out / "learning_curves.png", order)
    if curves is not None:
        paths["learning_curves.png"] = curves
    hard_text: list[str] = []
    explorers: dict[str, str] = {}
    if hardness:
        hard_paths, hard_text, tables = hardness_plots(records, out / "hardness", trust_pickle)
        paths.update(hard_paths)
        text += hard_text
        if html:
            explorers = {m: explorer(df) for m, df in tables.items()}
    if html:
        paths["report.html"] = out / "report.html"
        atomic_write_text(paths["report.html"], page(records, parts, paths, hard_text,
                                                     explorers))
    return {"text": "\n".join(text), "paths": paths, "summary": summary}


def page(records: list[dict], parts, paths: dict[str, Path], hardness_text: list[str],
         explorers: dict[str, str] | None = None) -> str:
    """``report.html``: provenance, the tables (sortable), the plots, the hardness section
    and a hardness explorer per method that records hardness (``explorers``)."""
    sections = [Section(title, note.strip(), df, folded=name == "published")
                for name, title, (df, note) in parts]
    plots = [paths[k] for k in ("conditions.png", "missing_rate.png", "learning_curves.png")
             if k in paths]
    if plots:
        sections.append(Section("Plots", images=plots))
    if hardness_text:
        sections.append(Section("Hardness", images=[p for k, p in paths.items() if
                                                    k.startswith("hardness/") and
                                                    p.suffix == ".png"],
                                markdown="\n\n".join(hardness_text)))
    for method, fragment in (explorers or {}).items():
        sections.append(Section(f"Hardness explorer: {method}", html=fragment))
    return render(_title(records), provenance(records), sections)


# --- provenance -------------------------------------------------------------------------------
def provenance(records: list[dict]) -> str:
    """One paragraph: how these numbers were made."""
    versions = sorted({json.loads(r["versions"]).get("hardymer", "?") for r in records
                       if r.get("versions")})
    protocols = sorted({r["protocol"] for r in records})
    rule = {"val": "best validation epoch, test evaluated once",
            "paper": "best epoch on the test split (the MoMKE/HARDY-MER papers' rule)"}
    folds = sorted({(r["fold"], r.get("fold_name") or str(r["fold"])) for r in records})
    seeds = sorted({r["seed"] for r in records})
    cells = "percent" if records[0]["task"] == "classification" else "fractions"
    gen = " (generated by hardymer's synthetic generator, not the real corpus)" \
        if any(r.get("generated") for r in records) else ""
    return (f"Data: {records[0]['dataset']} ({records[0]['data']}){gen}{data_notes(records)}. "
            f"Selection: {'; '.join(f'{p} = {rule.get(p, p)}' for p in protocols)}"
            f"{finetune_scopes(records)}. "
            f"Seeds: {', '.join(map(str, seeds))}. Folds{fold_schemes(records)}: "
            f"{', '.join(f'{k} ({n})' for k, n in folds)}. hardymer {', '.join(versions)}. "
            f"Cells: test split, mean ± std over seeds × folds ({cells}).")


SCOPES = {"fold": "fold (each fold's training split)", "none": "none (raw features)",
          "official-split": "official-split (fine-tuned once on the official training split "
                            "and reused in every fold: test labels of folds 1-4 shaped these "
                            "features, the reference code's protocol)"}


def finetune_scopes(records: list[dict]) -> str:
    """``; feature fine-tuning: ...`` for rows that recorded a scope (empty otherwise)."""
    scopes = sorted({r["finetune_scope"] for r in records if r.get("finetune_scope")})
    return f"; feature fine-tuning: {'; '.join(SCOPES.get(s, s) for s in scopes)}" \
        if scopes else ""


def fold_schemes(records: list[dict]) -> str:
    """`` (session)``: how the folds were made, as the rows recorded it (none for old rows)."""
    schemes = sorted({r["fold_scheme"] for r in records if r.get("fold_scheme")})
    return f" ({', '.join(schemes)})" if schemes else ""


def data_notes(records: list[dict]) -> str:
    """What loading left out, for a header (empty when nothing was)."""
    dropped = max((int(r.get("n_dropped") or 0) for r in records), default=0)
    return (f"; {dropped} utterance(s) without any available modality were left out of "
            "training and scoring" if dropped else "")


def _title(records) -> str:
    return f"{records[0]['dataset']}: test metrics, mean ± std over seeds × folds"


def _method_order(grid: dict, records: list[dict]) -> list[str]:
    names = [m["name"] for m in grid.get("methods", [])]
    seen = list(dict.fromkeys(r["method"] for r in records))
    return [n for n in names if n in seen] + [n for n in seen if n not in names]


def _ordered(summary: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    rank = {m: i for i, m in enumerate(order)}
    return summary.sort_values("method", key=lambda s: s.map(rank), kind="stable")


# --- the papers' layout -----------------------------------------------------------------------
def paper_table(summary: pd.DataFrame, task: str, order: list[str]
                ) -> tuple[pd.DataFrame, str]:
    """Rows = methods; columns = ``<condition> <metric>``; best mean per column in bold."""
    metrics = PAPER_METRICS[task]
    scale = 100.0 if task == "classification" else 1.0
    conds = condition_order(set(summary["condition"]) - {AVERAGE})
    if AVERAGE in set(summary["condition"]):
        at = conds.index("atv") if "atv" in conds else len(conds)
        conds.insert(at, AVERAGE)
    cols = [(c, m) for c in conds for m in metrics
            if ((summary["condition"] == c) & (summary["metric"] == m)).any()]
    idx = summary.set_index(["method", "condition", "metric"])
    best = {}
    for c, m in cols:
        sel = summary[(summary["condition"] == c) & (summary["metric"] == m)]
        best[(c, m)] = sel["mean"].min() if m in LOWER_IS_BETTER else sel["mean"].max()
    rows = []
    for method in order:
        row = {"method": method}
        for c, m in cols:
            if (method, c, m) not in idx.index:
                row[f"{c} {m}"] = "–"
                continue
            r = idx.loc[(method, c, m)]
            cell = f"{r['mean'] * scale:.2f}"
            if r["n"] > 1:
                cell += f" ± {r['std'] * scale:.2f}"
            if np.isclose(r["mean"], best[(c, m)]) and len(order) > 1:
                cell = f"**{cell}**"
            row[f"{c} {m}"] = cell
        rows.append(row)
    note = " Columns: available modalities and metric; bold = best mean."
    if AVERAGE in conds:
        note += (f" {AVERAGE} = mean of the six incomplete conditions (per seed and fold, "
                 "then summarised).")
    return pd.DataFrame(rows), note


def latex_table(df: pd.DataFrame, caption: str) -> str:
    """The table as a LaTeX ``tabular`` (pandas/jinja2), bold kept as ``\\textbf``."""
    tex = df.copy()
    for col in tex.columns:
        tex[col] = [str(v).replace("±", r"$\pm$").replace("%", r"\%") for v in tex[col]]
        tex[col] = [f"\\textbf{{{v[2:-2]}}}" if v.startswith("**") else v for v in tex[col]]
        tex[col] = [v.replace("_", r"\_") if col == "method" else v for v in tex[col]]
    body = tex.to_latex(index=False, escape=False, column_format="l" + "c" * (tex.shape[1] - 1))
    return f"% {caption}\n{body}"


# --- published figures -----------------------------------------------------------------------
def published_dataset(records: list[dict]) -> str | None:
    r = records[0]
    family, n = r.get("family"), r.get("n_classes")
    if family == "iemocap":
        return {4: "iemocap4", 6: "iemocap6"}.get(n)
    return family if family in ("mosi", "mosei") else None


def published_comparison(summary: pd.DataFrame, records: list[dict], order: list[str],
                         overrides: dict[str, list[str]] | None = None
                         ) -> tuple[pd.DataFrame, str] | None:
    """Ours, published and ours − published (points) for shared (method, condition, metric).

    A method compares with a published row when its registered method is the published one
    (ablations by their flag); its own overrides (budget, sizes) are listed beside it in the
    ``our overrides`` column, so a reader sees what differs from the paper's run.
    """
    key = published_dataset(records)
    if key is None:
        return None
    pub = load_published()
    pub = pub[pub["dataset"] == key]
    scale = 100.0 if records[0]["task"] == "classification" else 1.0
    base = {r["method"]: r.get("base_method", r["method"]) for r in records}
    overrides = overrides or {}
    rows = []
    for method in order:
        name = published_name(method)
        if name.split(" ")[0] != published_name(base.get(method, method)):
            continue  # another model under a published name
        for _, p in pub[(pub["method"] == name) & pub["value"].notna()].iterrows():
            cond = AVERAGE if p["condition"] == "avg" else p["condition"]
            ours = summary[(summary["method"] == method) & (summary["condition"] == cond)
                           & (summary["metric"] == p["metric"])]
            if ours.empty:
                continue
            o = float(ours["mean"].iloc[0])
            rows.append({"method": method, "condition": cond, "metric": p["metric"],
                         "ours": round(o * scale, 2), "published": round(p["value"] * scale, 2),
                         "ours − published": round((o - p["value"]) * scale, 2),
                         "our overrides": " ".join(overrides.get(method, [])) or "–",
                         "source": p["source"]})
    if not rows:
        return None
    gen = any(r.get("generated") for r in records)
    note = (f" Published: {key} as transcribed in hardymer/reports/published.csv "
            "(source per row)." + (" These data are generated, not the corpus the papers "
                                   "used: the difference says nothing about reproduction."
                                   if gen else ""))
    return pd.DataFrame(rows), note


# --- paired statistics ------------------------------------------------------------------------
def paired_differences(records: list[dict], task: str, order: list[str], seed: int = 0
                       ) -> tuple[pd.DataFrame, str] | None:
    """Every pair of methods on their common (fold, seed) cells: A − B of the primary metric
    averaged over the incomplete conditions both ran (or all common ones)."""
    metric = PAPER_METRICS[task][0]
    col = f"test_{metric}"
    df = pd.DataFrame(records)
    if col not in df or len(order) < 2:
        return None
    scale = 100.0 if task == "classification" else 1.0
    rows = []
    for a, b in combinations(order, 2):
        da, db = df[df["method"] == a], df[df["method"] == b]
        common = set(da["condition"]) & set(db["condition"])
        use = sorted(common & set(INCOMPLETE_CONDITIONS)) or sorted(common)
        if not use:
            continue
        # Only (fold, seed) pairs where both methods have every condition in ``use``.
        wa = da[da["condition"].isin(use)].pivot_table(col, ["fold", "seed"], "condition")
        wb = db[db["condition"].isin(use)].pivot_table(col, ["fold", "seed"], "condition")
        wa, wb = wa.reindex(columns=use).dropna(), wb.reindex(columns=use).dropna()
        ma, mb = wa.mean(axis=1), wb.mean(axis=1)
        both = ma.index.intersection(mb.index)
        if len(both) == 0:
            continue
        d = (ma.loc[both] - mb.loc[both]).to_numpy() * scale
        row = {"A": a, "B": b, "metric": metric, "conditions": ",".join(use), "pairs": len(d),
               "mean A − B": round(float(d.mean()), 2)}
        if len(d) >= 2 and np.ptp(d) > 0:
            ci = stats.bootstrap((d,), np.mean, confidence_level=0.95, n_resamples=9999,
                                 method="percentile", random_state=seed).confidence_interval
            row["95% CI"] = f"[{ci.low:.2f}, {ci.high:.2f}]"
            row["t-test p"] = round(float(stats.ttest_rel(ma.loc[both], mb.loc[both]).pvalue), 4)
        else:  # one pair, or identical differences: no spread to test
            row["95% CI"], row["t-test p"] = "–", "–"
        rows.append(row)
    if not rows:
        return None
    unit = "points" if task == "classification" else "fraction"
    note = (f" Per (fold, seed) pair where both methods have every listed condition: mean "
            f"{metric} over them, A minus B ({unit}); 95 % percentile bootstrap interval of the "
            "mean difference (9,999 resamples, seeded) and a paired t-test; '–' with fewer "
            "than two pairs or no spread.")
    return pd.DataFrame(rows), note


# --- plots ------------------------------------------------------------------------------------
def plot_missing_rate(summary: pd.DataFrame, task: str, path: Path, order: list[str]) -> Path:
    """Primary metric vs missing rate p of the ``random:p`` conditions, band = ± std."""
    plt = pyplot()
    metric = PAPER_METRICS[task][0]
    scale = 100.0 if task == "classification" else 1.0
    sel = summary[summary["condition"].str.startswith("random:") & (summary["metric"] == metric)]
    sel = sel.assign(rate=sel["condition"].str.split(":").str[1].astype(float))
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for method in order:
        s = sel[sel["method"] == method].sort_values("rate")
        if s.empty:
            continue
        ax.plot(s["rate"], s["mean"] * scale, marker="o", label=method)
        ax.fill_between(s["rate"], (s["mean"] - s["std"]) * scale,
                        (s["mean"] + s["std"]) * scale, alpha=0.15)
    ax.set_xlabel("missing rate p (each modality dropped with probability p, one kept)")
    ax.set_ylabel(f"{metric}" + (" (%)" if scale == 100 else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def curve_frame(records: list[dict], metric: str) -> pd.DataFrame:
    """Per (method, condition, seed, epoch): ``val_<metric>`` averaged over folds, from each
    cell's epoch log. Columns method, condition, seed, epoch, value; empty without logs."""
    rows = []
    for r in records:
        if not r.get("run_dir"):
            continue
        cell = Run(Path(r["run_dir"])).cell(r["fold"], r["condition"])
        for row in read_history(cell):
            if f"val_{metric}" in row:
                rows.append((r["method"], r["condition"], r["seed"], r["fold"], row["epoch"],
                             row[f"val_{metric}"]))
    df = pd.DataFrame(rows, columns=["method", "condition", "seed", "fold", "epoch", "value"])
    return df.groupby(["method", "condition", "seed", "epoch"], as_index=False)["value"].mean()


def learning_curves(records: list[dict], task: str, path: Path, order: list[str]
                    ) -> Path | None:
    """One panel per method: validation metric vs epoch, a line per condition (mean over
    seeds, band ± std over seeds). None when no cell has an epoch log."""
    metric = PAPER_METRICS[task][0]
    df = curve_frame(records, metric)
    if df.empty:
        return None
    plt = pyplot()
    methods = [m for m in order if m in set(df["method"])]
    conds = condition_order(set(df["condition"]))
    cols = min(3, len(methods))
    rows = -(-len(methods) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False,
                             sharey=True)
    scale = 100.0 if task == "classification" else 1.0
    n_seeds = df.groupby("method")["seed"].nunique()
    for ax, method in zip(axes.flat, methods):
        for cond in conds:
            sel = df[(df["method"] == method) & (df["condition"] == cond)]
            if sel.empty:
                continue
            g = sel.groupby("epoch")["value"].agg(["mean", "std"]).fillna(0.0) * scale
            ax.plot(g.index, g["mean"], label=cond, lw=1.2)
            ax.fill_between(g.index, g["mean"] - g["std"], g["mean"] + g["std"], alpha=0.12)
        n = int(n_seeds[method])
        ax.set_title(f"{method} ({n} seed{'s' if n > 1 else ''})", fontsize=9)
        ax.set_xlabel("epoch (selecting stage)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"val {metric}" + (" (%)" if scale == 100 else ""))
    for ax in list(axes.flat)[len(methods):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def hardness_plots(records: list[dict], out: Path, trust_pickle: bool = False
                   ) -> tuple[dict[str, Path], list[str], dict[str, pd.DataFrame]]:
    """Hardness tables and histograms of the first seed's run of each method that records
    hardness (HARDY-MER and its variants); returns the files, a Markdown summary each and
    each method's per-utterance table."""
    paths, texts, tables = {}, [], {}
    runs = {}
    for r in sorted(records, key=lambda r: r["seed"]):
        base = r.get("base_method")
        if base in METHODS and METHODS.get(base).records_hardness and r["method"] not in runs:
            runs[r["method"]] = (Path(r["run_dir"]), r["seed"])
    cache = {}
    for method, (run, seed) in runs.items():
        if not Run(run).exists():
            continue
        slug = method.replace(":", "-").replace("/", "_")
        try:
            res = inspect_run(run, out / slug, opener=lambda src: cache.setdefault(
                src, open_data(src, allow_pickle=trust_pickle)))
        except (InspectionError, DataError, FileNotFoundError) as err:
            texts.append(f"## Hardness: {method}\n\nnot inspected: {err}\n")
            continue  # e.g. the no-retrieval ablation has no plans to inspect
        for name, p in res["paths"].items():
            paths[f"hardness/{slug}/{Path(p).name}"] = Path(p)
        texts.append(f"## Hardness: {method} (seed {seed}'s run)"
                     f"\n\n{res['text']}")
        tables[f"{method} (seed {seed}'s run)"] = res["table"]
    return paths, texts, tables
