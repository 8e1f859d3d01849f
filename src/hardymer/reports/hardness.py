"""The hardness report: which training samples are hard, why, and who helps them.

For runs of a method that records hardness (``records_hardness``: HARDY-MER),
:func:`inspect_run` reads what each cell stored (the method's ``hardness_plan``: HARDY-MER's
curriculum plans) and writes, per training utterance and condition, ``h_dir``, ``h_ind``,
``h``, ``k_prime``, the support ids, distances and labels (and the ``planted_*`` ground truth
when the data is generated), a summary per condition (label agreement of the supports, Spearman
correlation of hardness with planted hardness) and plots. For data made by ``hardymer
extract`` the table also carries each utterance's transcript and media paths.

With ``html``, ``hardness.html`` is the same on one self-contained page with the *hardness
explorer* (:func:`explorer`): per condition the 20 hardest and the 20 easiest training
utterances first (every one a tick away), filterable by condition and free text, sortable,
and a click on a row shows its terms, planted truth, transcript, media and its supports with
their labels, distances and transcripts. The sweep report embeds the same explorer.

Planted hardness *under a condition* (``planted_effective``): a direct-hard sample is hard
when its key modality is missing (``planted_dir_eff``); an indirect-hard sample when its
disagreeing modality is available together with another one (``planted_ind_eff``) — with the
disagreeing modality missing, or alone, nothing is left to disagree with.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from ..data import open_data
from ..fileio import atomic_write_text
from ..models import METHODS, get_method_class
from ..protocol.conditions import parse_condition
from ..runs.layout import Run
from ..version import __version__
from .html import Section, explorer_html, render
from .tables import pyplot, to_markdown

PINNED = 20                     # hardest and easiest utterances shown first, per condition
MEDIA = ("transcript", "audio", "video")   # from the extracted data's utterance table


class InspectionError(ValueError):
    """The folder is not a run with stored hardness (message says what to do)."""


def hardness_methods() -> list[str]:
    """Registered methods whose runs record per-sample hardness."""
    return [name for name, cls in METHODS if cls.records_hardness]


def planted_under(utterances: pd.DataFrame, ids: np.ndarray, available: np.ndarray,
                  modalities: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """Planted direct / indirect / total hardness of ``ids`` under their availability (Q, M)."""
    if "planted_hardness" not in utterances:
        return None
    u = utterances.iloc[ids]
    missing = ~available
    p_dir = sum(u[f"planted_dir_{m}"].to_numpy(float) * missing[:, i]
                for i, m in enumerate(modalities) if f"planted_dir_{m}" in u)
    ind_mod = u["planted_ind_modality"].to_numpy(object)
    col = np.array([modalities.index(m) if m in modalities else -1 for m in ind_mod])
    seen = np.where(col >= 0, available[np.arange(len(ids)), np.maximum(col, 0)], False)
    p_ind = u["planted_ind"].to_numpy(float) * (seen & (available.sum(1) >= 2))
    return {"planted_dir_eff": p_dir, "planted_ind_eff": p_ind,
            "planted_effective": p_dir + p_ind}


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b)[0])


def plan_table(plan, dataset, fold: int, condition: str) -> pd.DataFrame:
    """One row per training utterance of a plan (see the module docstring for columns)."""
    u = dataset.utterances
    uid = u["utterance_id"].to_numpy(object)
    labels = dataset.labels
    sup = plan.supports
    rows = {"fold": fold, "condition": condition, "utterance_id": uid[plan.ids],
            "label": labels[plan.ids], "h_dir": plan.h_dir, "h_ind": plan.h_ind, "h": plan.h,
            "h_dir_raw": plan.h_dir_raw, "h_ind_raw": plan.h_ind_raw, "k_prime": plan.k_prime}
    mask = sup.mask
    fmt = lambda vals: [";".join(map(str, v[m])) for v, m in zip(vals, mask)]  # noqa: E731
    rows["support_ids"] = fmt(np.where(mask, uid[np.maximum(sup.ids, 0)], ""))
    rows["support_distances"] = fmt(np.round(sup.distances, 4))
    rows["support_labels"] = fmt(np.where(mask, labels[np.maximum(sup.ids, 0)], 0))
    rows["support_agreement"] = sup.label_agreement(_discrete(labels, dataset.task))
    names = dataset.class_names
    if names and dataset.task == "classification":
        rows["label_name"] = np.asarray(names, dtype=object)[labels[plan.ids]]
        rows["support_label_names"] = fmt(np.where(
            mask, np.asarray(names, dtype=object)[labels[np.maximum(sup.ids, 0)]], ""))
    for col, src in zip(MEDIA, ("text", "audio", "video")):
        if src in u and not pd.api.types.is_numeric_dtype(u[src]):
            rows[col] = u[src].fillna("").astype(str).to_numpy()[plan.ids]
    df = pd.DataFrame(rows)
    planted = planted_under(u, plan.ids, plan.available, dataset.modalities)
    if planted is not None:
        for c in [c for c in u.columns if c.startswith("planted_")]:
            df[c] = u[c].to_numpy()[plan.ids]
        for c, v in planted.items():
            df[c] = v
    return df


def weight_table(frame: pd.DataFrame, per_epoch: dict[int, dict]) -> pd.DataFrame:
    """Long form: one row per (training utterance, epoch of the conditioned stage) with the
    ``help`` its term hands out and the ``loss_weight`` its own loss ends up with."""
    return pd.concat([pd.DataFrame({"fold": frame.fold, "condition": frame.condition,
                                    "utterance_id": frame.utterance_id, "epoch": e,
                                    "h": frame.h, "help": w["help"],
                                    "loss_weight": w["loss_weight"]})
                      for e, w in sorted(per_epoch.items())], ignore_index=True)


def _discrete(labels: np.ndarray, task: str) -> np.ndarray:
    # Regression: supports "agree" when they round to the same sentiment class (-3..3).
    return labels if task == "classification" else np.round(labels).astype(np.int64)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per (fold, condition): sizes, mean h and k', support label agreement, correlations."""
    out = []
    for (fold, cond), g in df.groupby(["fold", "condition"], sort=False):
        row = {"fold": fold, "condition": cond, "n": len(g), "mean_h": g.h.mean(),
               "mean_k_prime": g.k_prime.mean(),
               "support_label_agreement": g.support_agreement.mean()}
        if "help_first" in g:   # does a harder sample get more help? (nan: all the same)
            for when in ("first", "last"):
                row[f"spearman_help_h_{when}"] = _spearman(g[f"help_{when}"], g.h)
                row[f"spearman_loss_weight_h_{when}"] = _spearman(g[f"loss_weight_{when}"],
                                                                  g.h)
        if "planted_effective" in g:
            row.update({
                "spearman_h_planted": _spearman(g.h, g.planted_hardness),
                "spearman_h_planted_effective": _spearman(g.h, g.planted_effective),
                "spearman_hdir_planted_dir": _spearman(g.h_dir_raw, g.planted_dir_eff),
                "spearman_hind_planted_dir": _spearman(g.h_ind_raw, g.planted_dir_eff),
                "spearman_hind_planted_ind": _spearman(g.h_ind_raw, g.planted_ind_eff),
                "spearman_hdir_planted_ind": _spearman(g.h_dir_raw, g.planted_ind_eff)})
        out.append(row)
    return pd.DataFrame(out)


def pooled_spearman(df: pd.DataFrame, conditions: list[str] | None = None) -> dict[str, float]:
    """Correlations of each sample's hardness averaged over conditions with planted hardness.

    A sample's planted hardness does not depend on the condition, but each estimate can only
    see part of it under one condition (a direct-hard sample is hard when its key modality is
    missing): the mean over the incomplete conditions sees all of it.
    """
    if "planted_hardness" not in df:
        return {}
    sel = df[df.condition.isin(conditions)] if conditions else df
    g = sel.groupby(["fold", "utterance_id"])
    mean = g[["h", "h_dir_raw", "h_ind_raw"]].mean()
    first = g[["planted_hardness", "planted_ind"]].first()
    p_dir = g[[c for c in df.columns if c.startswith("planted_dir_") and c != "planted_dir_eff"]
              ].first().sum(axis=1)
    return {"h~planted": _spearman(mean.h, first.planted_hardness),
            "h_dir~planted_dir": _spearman(mean.h_dir_raw, p_dir),
            "h_ind~planted_dir": _spearman(mean.h_ind_raw, p_dir),
            "h_ind~planted_ind": _spearman(mean.h_ind_raw, first.planted_ind),
            "h_dir~planted_ind": _spearman(mean.h_dir_raw, first.planted_ind)}


def _condition_panels(df: pd.DataFrame, height: float, **subplots):
    """A figure with one panel per condition of ``df`` (at most 4 a row), unused panels off.

    Returns (plt, fig, [(axis, condition), ...]).
    """
    plt = pyplot()
    conds = list(dict.fromkeys(df.condition))
    cols = min(4, len(conds))
    rows = int(np.ceil(len(conds) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, height * rows), squeeze=False,
                             **subplots)
    for ax in list(axes.flat)[len(conds):]:
        ax.axis("off")
    return plt, fig, list(zip(axes.flat, conds))


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_distributions(df: pd.DataFrame, path: Path, class_names=None) -> Path:
    """Histogram of h per condition (one panel each), one line per class."""
    plt, fig, panels = _condition_panels(df, 2.6, sharex=True)
    bins = np.linspace(0, 1, 21)
    labels = sorted(df.label.unique()) if df.label.nunique() <= 12 else None
    for ax, cond in panels:
        g = df[df.condition == cond]
        if labels is None:
            ax.hist(g.h, bins=bins, histtype="step")
        for lab in labels or []:
            name = class_names[int(lab)] if class_names else str(lab)
            ax.hist(g.h[g.label == lab], bins=bins, histtype="step", label=name)
        ax.set_title(f"{cond} (mean k' {g.k_prime.mean():.2f})", fontsize=9)
        ax.set_xlabel("h")
    if labels:
        panels[0][0].legend(fontsize=7)
    fig.suptitle("Hardness of training samples per condition and class")
    return _save(plt, fig, path)


def plot_vs_planted(df: pd.DataFrame, path: Path) -> Path:
    """h against planted hardness under each condition, coloured by planted kind."""
    plt, fig, panels = _condition_panels(df, 2.8, sharey=True)
    colors = {"clean": "#999999", "direct": "#d62728", "indirect": "#1f77b4"}
    for ax, cond in panels:
        g = df[df.condition == cond]
        for kind, c in colors.items():
            s = g[g.planted_kind == kind]
            ax.scatter(s.planted_effective, s.h, s=3, alpha=0.4, color=c, label=kind)
        rho = _spearman(g.h, g.planted_effective)
        ax.set_title(f"{cond}: Spearman {rho:.2f}", fontsize=9)
        ax.set_xlabel("planted hardness under the condition")
    panels[0][0].set_ylabel("estimated h")
    panels[0][0].legend(fontsize=7, markerscale=3)
    return _save(plt, fig, path)


def explorer(df: pd.DataFrame) -> str:
    """The hardness explorer (HTML) of a :func:`plan_table` frame: per (fold, condition) the
    ``PINNED`` hardest then the ``PINNED`` easiest utterances first (column ``shown``), then
    the rest by decreasing h; a click on a row shows its terms and supports."""
    parts = []
    for _, g in df.groupby(["fold", "condition"], sort=False):
        g = g.sort_values("h", ascending=False, kind="stable")
        hard = g.iloc[:PINNED]
        easy = g.iloc[len(hard):].iloc[::-1].iloc[:PINNED]
        rest = g.drop(index=hard.index.union(easy.index))
        shown = [f"hardest {i + 1}" for i in range(len(hard))] + \
            [f"easiest {i + 1}" for i in range(len(easy))] + [""] * len(rest)
        parts.append(pd.concat([hard, easy, rest]).assign(shown=shown))
    d = pd.concat(parts, ignore_index=True)
    label = "label_name" if "label_name" in d else "label"
    cols = ["condition", "shown", "utterance_id", label, "h", "h_dir", "h_ind", "k_prime",
            "support_agreement"] + [c for c in ("planted_kind", "planted_effective") if c in d]
    table = d[cols].rename(columns={label: "label", "k_prime": "k'",
                                    "support_agreement": "support agreement"})
    if d["fold"].nunique() > 1:
        table["condition"] = [f"fold {f}: {c}" for f, c in zip(d.fold, d.condition)]
    if "transcript" in d:
        table["transcript"] = d.transcript.map(lambda t: t if len(t) <= 60 else t[:57] + "...")
    # A support's transcript, from the same (fold, condition)'s rows (supports are training
    # utterances, each of which has a row there).
    text_of = dict(zip(zip(d.fold, d.condition, d.utterance_id), d.transcript)) \
        if "transcript" in d else None
    # Details: what the row does not show (raw terms, planted truth, full transcript, media).
    extra = ["h_dir_raw", "h_ind_raw"] + [c for c in d.columns if c.startswith("planted_")
                                          and c not in cols] + [c for c in MEDIA if c in d]
    fields = d[extra].rename(columns=lambda c: c.replace("_", " "))
    labs = d.get("support_label_names", d.support_labels).astype(str)
    subs = []
    for f, cond, ids, lab, dist in zip(d.fold, d.condition, d.support_ids.astype(str), labs,
                                       d.support_distances.astype(str)):
        ids = [x for x in ids.split(";") if x and x != "nan"]
        lab, dist = lab.split(";"), dist.split(";")
        subs.append([[j + 1, sid, lab[j], float(dist[j])]
                     + ([text_of.get((f, cond, sid), "")] if text_of else [])
                     for j, sid in enumerate(ids)])
    note = (f"Per condition the {PINNED} hardest and the {PINNED} easiest training utterances "
            "(tick 'show all' for every one); choose a condition, type to filter, click a "
            "header to sort, click a row for its hardness terms and supports.")
    return explorer_html(table, fields, subs, ("rank", "utterance", "label", "distance")
                         + (("transcript",) if text_of else ()),
                         "{n} supports (nearest training utterances under the same pattern, "
                         "best first)", filter_by="condition", first="shown", note=note,
                         label="training utterances")


def inspect_run(run: Path, out: Path, opener: Callable | None = None,
                html: bool = False) -> dict:
    """Write ``hardness.csv``, ``summary.{csv,md}`` and plots for a run folder of a method
    that records hardness; with ``html`` also ``hardness.html`` (with the explorer)."""
    run, out = Run(run), Path(out)
    takers = " or ".join(f"`--method {m}`" for m in hardness_methods())
    if not run.exists():
        raise InspectionError(f"{run.meta_path} not found: pass a folder made by "
                              f"`hardymer train` with {takers}")
    try:
        cls = get_method_class(run.method)
    except KeyError as err:
        raise InspectionError(f"{run.path}: {err.args[0]}") from None
    if not cls.records_hardness:
        raise InspectionError(f"{run.path} is a {run.method!r} run; hardness is recorded by "
                              f"{takers} runs only")
    dataset = (opener or open_data)(run.data)
    rc = run.config
    config = cls.Config(**rc.model)
    frames, weights = [], []
    for k in run.folds:
        for cond in run.conditions:
            c = parse_condition(cond, dataset.modalities)
            plan = cls.hardness_plan(run.cell(k, c))
            if plan is not None:
                frame = plan_table(plan, dataset, k, c.name)
                per_epoch = cls.plan_weights(config, rc.train, plan)
                if per_epoch:
                    weights.append(weight_table(frame, per_epoch))
                    first, last = per_epoch[min(per_epoch)], per_epoch[max(per_epoch)]
                    for col in ("help", "loss_weight"):
                        frame[f"{col}_first"], frame[f"{col}_last"] = first[col], last[col]
                frames.append(frame)
    if not frames:
        raise InspectionError(f"no curriculum plans under {run.path}: has training reached "
                              "the stage that stores them (re-run the train command), or was it "
                              "run with an ablation that stores none (HARDY-MER: "
                              "model.retrieval=false)?")
    df = pd.concat(frames, ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "hardness.csv", index=False)
    if weights:
        pd.concat(weights, ignore_index=True).to_csv(out / "weights.csv", index=False)
    summary = summarize(df)
    summary.to_csv(out / "summary.csv", index=False)
    incomplete = [c for c in dict.fromkeys(df.condition) if not _is_full(c, dataset.modalities)]
    pooled = pooled_spearman(df, incomplete)
    text = to_markdown(summary.round(3))
    pooled_text = ("Mean hardness over the incomplete conditions vs planted hardness "
                   "(Spearman): " + ", ".join(f"{k} {v:.3f}" for k, v in pooled.items())
                   if pooled else "")
    if pooled:
        text += f"\n{pooled_text}\n"
    (out / "summary.md").write_text(text)
    paths = {"table": out / "hardness.csv", "summary": out / "summary.md",
             **({"weights": out / "weights.csv"} if weights else {}),
             "distribution_plot": plot_distributions(df, out / "hardness_by_condition.png",
                                                     dataset.class_names)}
    if "planted_effective" in df:
        paths["planted_plot"] = plot_vs_planted(df, out / "hardness_vs_planted.png")
    if html:
        paths["html"] = out / "hardness.html"
        images = [p for k, p in paths.items() if k.endswith("_plot")]
        generated = " (generated by hardymer's synthetic generator, not a real corpus)" \
            if dataset.meta.get("generator") else ""
        prov = (f"Run {run.path}: {run.method} on {dataset.name} ({run.data}){generated}; "
                f"folds {', '.join(map(str, run.folds))}; conditions "
                f"{', '.join(run.conditions)}. Hardness of each training utterance as the "
                "curriculum plan of its cell's first conditioned epoch scored it. "
                f"hardymer {__version__}.")
        sections = [Section("Summary per condition", table=summary.round(3),
                            markdown=pooled_text),
                    Section("Plots", images=images),
                    Section("Hardness explorer", html=explorer(df))]
        atomic_write_text(paths["html"], render(f"Hardness: {run.method} run {run.path.name}",
                                                prov, sections))
    return {"summary": summary, "pooled": pooled, "paths": paths, "text": text, "table": df}


def _is_full(cond: str, modalities) -> bool:
    c = parse_condition(cond, modalities)
    return not c.is_random and len(c.keep) == len(modalities)
