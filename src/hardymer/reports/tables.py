"""Result tables (CSV / Markdown) and plots from a run's records.

Records are the dicts written by :mod:`hardymer.runs.experiment` (one per method, fold and
condition). Tables put conditions in the papers' order (a, t, v, at, av, tv, average of the six
incomplete ones, atv, then random rates) and give mean ± std over folds.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..fileio import atomic_write_text
from ..metrics import metric_names
from ..protocol.conditions import INCOMPLETE_CONDITIONS, STANDARD_CONDITIONS

AVERAGE = "avg(6)"


def condition_order(names) -> list[str]:
    fixed = [c for c in STANDARD_CONDITIONS if c in names]
    rest = sorted(n for n in names if n not in STANDARD_CONDITIONS)
    return fixed + rest


def canonical_condition(name: str) -> str:
    """Fixed conditions over modalities a, t, v in the papers' letter order (``vt`` -> ``tv``,
    ``avt`` -> ``atv``), whatever the data set's modality order; other names unchanged."""
    if name and set(name) <= set("atv") and len(set(name)) == len(name):
        return "".join(m for m in "atv" if m in name)
    return name


def summarize(records: list[dict], task: str) -> pd.DataFrame:
    """Long table: method, condition, metric, mean, std, n (folds × seeds)."""
    df = pd.DataFrame(records)
    df["condition"] = df["condition"].map(canonical_condition)
    metrics = [m for m in metric_names(task) if f"test_{m}" in df]
    long = df.melt(id_vars=["method", "condition", "fold", "seed"],
                   value_vars=[f"test_{m}" for m in metrics], var_name="metric")
    long["metric"] = long["metric"].str.removeprefix("test_")
    # The six-condition average is taken per fold and seed first, then summarised.
    inc = long[long["condition"].isin(INCOMPLETE_CONDITIONS)]
    full = inc.groupby(["method", "fold", "seed", "metric"])["condition"].transform("nunique")
    avg = inc[full == len(INCOMPLETE_CONDITIONS)]
    if len(avg):
        avg = avg.groupby(["method", "fold", "seed", "metric"], as_index=False)["value"].mean()
        avg["condition"] = AVERAGE
        long = pd.concat([long, avg], ignore_index=True)
    out = long.groupby(["method", "condition", "metric"])["value"].agg(
        mean="mean", std=lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
        n="count").reset_index()
    return out


def wide_table(summary: pd.DataFrame, task: str, fmt: str = "{:.2f}") -> pd.DataFrame:
    """Rows = method × condition, columns = metrics, cells 'mean ± std' in percent."""
    scale = 100.0 if task == "classification" else 1.0
    rows = []
    conds = condition_order(summary["condition"].unique().tolist() + [AVERAGE])
    conds = [c for c in conds if c in set(summary["condition"])]
    if AVERAGE in set(summary["condition"]):
        conds = [c for c in conds if c != AVERAGE]
        at = conds.index("atv") if "atv" in conds else len(conds)
        conds.insert(at, AVERAGE)
    for method in summary["method"].unique():
        for cond in conds:
            sel = summary[(summary["method"] == method) & (summary["condition"] == cond)]
            if sel.empty:
                continue
            row = {"method": method, "condition": cond, "n": int(sel["n"].iloc[0])}
            by_metric = sel.set_index("metric")
            for metric in metric_names(task):
                if metric not in by_metric.index:
                    continue
                r = by_metric.loc[metric]
                k = scale if metric not in ("MAE", "Corr") else 1.0
                cell = fmt.format(r["mean"] * k)
                if r["n"] > 1:
                    cell += " ± " + fmt.format(r["std"] * k)
                row[metric] = cell
            rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub Markdown table (no extra dependency)."""
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def pyplot():
    """matplotlib.pyplot on the headless Agg backend (imported on first plot: the backend
    must be chosen before pyplot loads, and table-only callers never pay for it)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_conditions(summary: pd.DataFrame, task: str, path: Path,
                    metrics: tuple[str, ...] | None = None, title: str = "") -> Path:
    """Grouped bars per condition (one group per metric panel, one bar per method) with std."""
    plt = pyplot()

    metrics = metrics or (("WA", "UA") if task == "classification" else ("ACC", "F1"))
    methods = list(summary["method"].unique())
    conds = condition_order(set(summary["condition"]) - {AVERAGE})
    if AVERAGE in set(summary["condition"]):
        conds.append(AVERAGE)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 3.8), squeeze=False)
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(conds))
    for ax, metric in zip(axes[0], metrics):
        for j, method in enumerate(methods):
            sel = summary[(summary["method"] == method) & (summary["metric"] == metric)]
            sel = sel.set_index("condition").reindex(conds)
            ax.bar(x + (j - (len(methods) - 1) / 2) * width, sel["mean"] * 100, width,
                   yerr=sel["std"] * 100, capsize=2, label=method)
        ax.set_xticks(x, conds)
        ax.set_ylabel(f"{metric} (%)")
        ax.set_xlabel("available modalities")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(records: list[dict], task: str, paths: dict[str, Path], title: str = "",
                 header: str = "") -> tuple[pd.DataFrame, dict[str, Path]]:
    """The summary in ``paths["csv"]`` (long, mean/std), ``paths["md"]`` (wide, with a
    provenance header) and ``paths["png"]`` (a run's: :meth:`hardymer.runs.Run.table_paths`)."""
    summary = summarize(records, task)
    wide = wide_table(summary, task)
    atomic_write_text(paths["csv"], summary.to_csv(index=False))
    atomic_write_text(paths["md"], (f"# {title}\n\n" if title else "") + header + "\n" + to_markdown(wide))
    plot_conditions(summary, task, paths["png"], title=title)
    return wide, paths
