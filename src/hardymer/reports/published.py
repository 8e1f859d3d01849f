"""The published result tables of the seed documents, as data: one row per printed number.

``published.csv`` (package data beside this module) holds every result table of the seed
``002_a692a746aed8bfc4`` (the slides; seeds ``000_…`` and ``001_…`` print no tables) and, from
outside the seeds, PriMD's comparison table (arXiv 2608.30563, Table 1: IEMOCAP-4 and CMU-MOSEI
cells, IEMOCAP-6 Average), in long form with the columns

==============  ================================================================================
``source``      the paper and the table, named after the slides' titles (the slides give no
                table numbers): ``MoMKE (ACM MM 2024) comparison table``, ``MoMKE (ACM MM 2024)
                ablation table``, ``HARDY-MER (ACM MM 2025) comparison table`` (one table shown
                on two slides, unimodal and bimodal conditions; ``seed`` says which),
                ``HARDY-MER (ACM MM 2025) ablation table``, ``PriMD (arXiv 2608.30563) comparison
                table``
``seed``        seed file, its line range, the slide title and the seed line of the row (PriMD:
                ``not in the seeds: PriMD paper …`` and where it was read)
``dataset``     ``iemocap4``, ``iemocap6``, ``mosi``, ``mosei``
``method``      the toolkit's method names (``momke``, ``hardymer``, ``cpm-nets``, ``mmin``,
                ``if-mmin``, ``cif-mmin``, ``gcnet``, ``mctn``, ``imder``, ``primd``), else a
                lowercase slug (``mran``: our ``mran-like`` is compared with it, its
                ``published_as``); ablation rows ``momke w/o router``, ``hardymer w/o h_dir``, …
``condition``   AVAILABLE modalities in the toolkit's notation (``a t v at av tv atv``) or
                ``avg`` for a table's Average column (mean of the six incomplete conditions;
                :mod:`hardymer.reports.tables` calls the same quantity ``avg(6)``)
``metric``      ``WA``, ``UA`` (IEMOCAP), ``ACC``, ``F1`` (CMU), as the tables print them
``value``       a fraction in [0, 1]; empty where the table prints ``-``
``scale_note``  ``converted from percent (printed 70.32), divided by 100`` where converted
``protocol``    ``test-best-epoch`` for MoMKE's and HARDY-MER's own rows and their ablations
                (the seeds do not say; ``../shared/spec`` documents the reference code's choice
                of the best epoch on the test set), ``unknown`` for every other row
``note``        bold/underline marks, missing cells, odd formatting and suspected typos
==============  ================================================================================

The tables and their conventions
--------------------------------
1. **MoMKE comparison table** (seed lines 378–406; IEMOCAP, CMU-MOSI, CMU-MOSEI; 5 methods each:
   MCTN, MMIN, IF-MMIN, MRAN, MoMKE on IEMOCAP; MCTN, MMIN, GCNet, IMDer, MoMKE on CMU).
   Percent, two decimals, each cell a pair ``WA/UA`` (IEMOCAP) or ``ACC/F1`` (CMU). IEMOCAP is the
   four-class set (the slide's HLO: "IEMOCAP4类"). The header is garbled in the seed: it shows
   only ``{a} {t} {v} {a, v}`` with ``WA(%) UA(%)`` under each, while every row has eight pair
   cells. We read the eight cells with the ablation table's header ``{a} {t} {v} {a,v} {a,t}
   {t,v} Average {a,t,v}``: the MoMKE rows of the two tables are identical cell for cell, most
   Average cells are the mean of the six before them in that order, and the seed's Δ_SOTA rows
   (MoMKE minus the best baseline; not transcribed, they are derived) check against it. The
   braces list the AVAILABLE modalities (``{a,t,v}`` is the full-modality column).
   IEMOCAP baselines print ``-`` at ``{a,t,v}``: kept as rows with an empty value. The CMU
   baselines carry a superscript ``a`` whose footnote is not in the seed.
2. **MoMKE ablation table** (seed lines 408–433): the same datasets and column convention; rows
   "Without unimodal expert training", "Without experts mixing training", "Without router",
   MoMKE.
3. **HARDY-MER comparison table** (seed lines 571–646, two slides: unimodal columns ``a v t``,
   bimodal ``at av tv``; IEMOCAP four-class and six-class with WA/UA, CMU-MOSEI with ACC/F1;
   CPM-Net (printed "CPMNet"), MMIN, GCNet, CIF-MMIN, MoMKE, HARDY-MER). Fractions, four
   decimals. The letters are the AVAILABLE modalities, not the missing ones: HARDY-MER's MMIN
   cells ``a`` and ``t`` (WA and UA) and the WA of ``v``, ``av``, ``at`` are exactly MoMKE's MMIN
   cells ``{a}``, ``{t}``, ``{v}``, ``{a,v}``, ``{a,t}`` (read as "missing", they would match
   nothing); ``t`` is the strongest single modality in both papers;
   and the paper page (seed ``001``) names ``{a,t}`` and ``{t,v}`` as the CMU-MOSEI conditions
   where HARDY-MER trails, which are the ``at`` and ``tv`` columns where it is below MoMKE.
   The dataset labels sit in displaced merged cells in the seed: "IEMOCAP six-class" is printed
   on the four-class Δ row (seed line 591) and "CMUMOSEI" on the six-class HARDY-MER row (597);
   each block's Δ_Sota row (HARDY-MER minus the best baseline, all 36 checked) places the rows.
4. **HARDY-MER ablation table** (seed lines 648–668): columns ``a v t at av tv Average``, WA/UA
   fractions; rows w/o h_dir, w/o h_ind, w/o h, w/o retrieval features, w/o fine-tuning
   features, HARDY-MER. The seed names no dataset; ``iemocap4`` is inferred (the full-model row
   equals HARDY-MER's IEMOCAP four-class row, and its Average is that row's mean).

Ambiguities and suspected typos (each also in the rows' ``note``)
-----------------------------------------------------------------
* WA/UA: the slides' own definitions swap the names (they define UA as correct/total). The
  columns are kept as printed and mean what :mod:`hardymer.metrics` computes
  (WA = accuracy, UA = mean per-class recall).
* Printed with fewer decimals: MoMKE table MRAN IEMOCAP ``{t,v}`` UA "72.2"; HARDY-MER ablation
  full-model ``av`` UA "0.745".
* MoMKE table, CMU-MOSEI: IMDer's Average (76.00/75.30) is not the mean of its six cells
  (74.53/73.72), and the seed's Δ_SOTA for MoMKE's Average (↑4.80/↑5.08) was taken against
  those means; GCNet ``{a,v}`` F1 57.20 (beside ACC 64.10) looks like a typo: 62.90 would make
  GCNet's printed Average F1 its mean. Δ_SOTA at ``{a,t,v}``: the CMU-MOSI F1 ↑2.39 should be
  2.29 by the printed cells, and the CMU-MOSEI ACC ↑2.02 is taken against IMDer's 85.10, not
  GCNet's 85.20.
* Averages off the mean beyond rounding: MoMKE table MMIN and IF-MMIN (IEMOCAP; figures quoted
  from earlier papers), MoMKE ablation "Without unimodal expert training" and "Without experts
  mixing training" (IEMOCAP), "Without experts mixing training" (CMU-MOSEI). All HARDY-MER
  Averages agree with their rows.
* HARDY-MER's CMU-MOSEI ``av`` cell (0.7482/0.7411) repeats its ``a`` cell: possibly a copy slip.
  Other repeated pairs within one table are noted where they occur.
* HARDY-MER's MMIN row (IEMOCAP-4) matches MoMKE's quoted MMIN figures in 7 of 12 cells and
  differs in the others by one or two digits (v UA, at UA, av UA, tv WA/UA): it looks quoted
  rather than re-run, so its protocol is ``unknown`` whatever the spec assumes. HARDY-MER's MoMKE
  rows are the HARDY-MER authors' re-run and differ from MoMKE's own figures.
* Attribution: the slides' reference list gives HARDY-MER as "Liu, Rui, et al." while the
  paper page (seed ``001``) lists Zuo, Yuan, Fan, Liu, Lian; ``source`` names method and venue.

Examples
--------
>>> df = load_published()
>>> float(df.query("source.str.startswith('HARDY-MER') and dataset == 'iemocap4' and "
...                "method == 'cpm-nets' and condition == 'a' and metric == 'WA'")["value"].iloc[0])
0.4685
>>> t = published_table("iemocap4", "WA", methods=["hardymer"], source="ablation")
>>> t.round(4).values.tolist()
[[0.7265, 0.8249, 0.6319, 0.8167, 0.7419, 0.7918, 0.7556]]
"""
from __future__ import annotations

import csv
import io
import math
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path

import pandas as pd

COLUMNS = ("source", "seed", "dataset", "method", "condition", "metric", "value", "scale_note",
           "protocol", "note")
KEY = ("source", "dataset", "method", "condition", "metric")
DATASETS = ("iemocap4", "iemocap6", "mosi", "mosei")
CONDITIONS = ("a", "t", "v", "at", "av", "tv", "avg", "atv")  # the report's order
METRICS = {"iemocap4": ("WA", "UA", "F1"), "iemocap6": ("WA", "UA", "F1"),
           "mosi": ("ACC", "F1", "MAE", "Corr"), "mosei": ("ACC", "F1", "MAE", "Corr")}
PROTOCOLS = ("test-best-epoch", "unknown")
MISSING_NOTE = "missing cell"
_METHOD_RE = re.compile(r"^[a-z0-9][a-z0-9_\-/ ]*$")
_RESOURCE = ("hardymer.reports", "published.csv")


class PublishedDataError(ValueError):
    """The published-results file is malformed; the message names file, row and field."""


def load_published(path: str | Path | None = None) -> pd.DataFrame:
    """All published figures, one row per number, validated.

    Parameters
    ----------
    path : str or Path, optional
        Another file in the same format (default: the packaged ``published.csv``).

    Returns
    -------
    DataFrame with the columns of :data:`COLUMNS`; ``value`` is float (NaN for a cell the
    table prints as ``-``), every other column str.

    Raises
    ------
    PublishedDataError
        Naming the file, the row (line number in the file) and the field.
    """
    if path is None:
        res = resources.files(_RESOURCE[0]).joinpath(_RESOURCE[1])
        return _load(str(res), res.read_text(encoding="utf-8")).copy()
    path = Path(path)
    return _load(str(path), path.read_text(encoding="utf-8")).copy()


@lru_cache(maxsize=4)
def _load(name: str, text: str) -> pd.DataFrame:
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise PublishedDataError(f"{name}: line 1 (header): expected columns {', '.join(COLUMNS)}; "
                                 f"found {', '.join(reader.fieldnames or ()) or 'nothing'}")
    rows, seen = [], {}
    for rec in reader:
        line = reader.line_num
        bad = _complainer(name, line, rec)
        if None in rec or any(v is None for v in rec.values()):
            raise PublishedDataError(f"{name}: line {line}: expected {len(COLUMNS)} fields; "
                                     f"found a different number")
        for field in ("source", "seed"):
            if not rec[field].strip():
                bad(field, "a non-empty text")
        if rec["dataset"] not in DATASETS:
            bad("dataset", f"one of {', '.join(DATASETS)}")
        if not _METHOD_RE.match(rec["method"]):
            bad("method", "a lowercase name (letters, digits, '-', '_', '/', spaces)")
        if rec["condition"] not in CONDITIONS:
            bad("condition", f"one of {', '.join(CONDITIONS)} (available modalities or avg)")
        if rec["metric"] not in METRICS[rec["dataset"]]:
            bad("metric", f"one of {', '.join(METRICS[rec['dataset']])} for {rec['dataset']}")
        if rec["protocol"] not in PROTOCOLS:
            bad("protocol", f"one of {', '.join(PROTOCOLS)}")
        if rec["value"] == "":
            if not rec["note"].startswith(MISSING_NOTE):
                bad("value", f"a number (an empty value needs a note starting {MISSING_NOTE!r})")
            value = math.nan
        else:
            try:
                value = float(rec["value"])
            except ValueError:
                bad("value", "a number")
            if not (0.0 <= value <= 1.0) and rec["metric"] not in ("MAE", "Corr"):
                bad("value", "a fraction in [0, 1] (percentages are divided by 100)")
        key = tuple(rec[k] for k in KEY)
        if key in seen:
            raise PublishedDataError(f"{name}: line {line}: duplicate of line {seen[key]} for "
                                     f"({', '.join(KEY)}) = {key}")
        seen[key] = line
        rows.append({**rec, "value": value})
    if not rows:
        raise PublishedDataError(f"{name}: no rows")
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df["value"] = df["value"].astype(float)
    return df


def _complainer(name: str, line: int, rec: dict):
    def bad(field, expected):
        raise PublishedDataError(f"{name}: line {line}, field {field!r}: expected {expected}; "
                                 f"found {rec.get(field)!r}")
    return bad


def published_table(dataset: str, metric: str, methods=None, source: str | None = None
                    ) -> pd.DataFrame:
    """Wide table of one dataset and metric: rows (source, method), columns conditions.

    Parameters
    ----------
    dataset : {'iemocap4', 'iemocap6', 'mosi', 'mosei'}
    metric : str
        ``WA``/``UA`` for IEMOCAP, ``ACC``/``F1`` for CMU.
    methods : list of str, optional
        Keep these methods, in this order (default: all, in file order).
    source : str, optional
        Keep the sources whose name contains this text, case-insensitive (e.g. ``"HARDY-MER"``,
        ``"MoMKE (ACM MM 2024) comparison"``, ``"ablation"``).

    Returns
    -------
    DataFrame indexed by (source, method), columns the conditions present in
    ``a t v at av tv avg atv`` order, values fractions (NaN where a table has no cell).
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    if metric not in METRICS[dataset]:
        raise ValueError(f"unknown metric {metric!r} for {dataset}; expected one of "
                         f"{', '.join(METRICS[dataset])}")
    df = load_published()
    df = df[(df["dataset"] == dataset) & (df["metric"] == metric)]
    if source is not None:
        df = df[df["source"].str.contains(source, case=False, regex=False)]
        if df.empty:
            raise ValueError(f"no published {dataset} {metric} figures from a source matching "
                             f"{source!r}")
    if methods is not None:
        methods = [methods] if isinstance(methods, str) else list(methods)
        unknown = [m for m in methods if m not in set(df["method"])]
        if unknown:
            raise ValueError(f"no published {dataset} {metric} figures for {unknown}; known: "
                             f"{', '.join(dict.fromkeys(df['method']))}")
        df = df[df["method"].isin(methods)]
    order = list(dict.fromkeys(zip(df["source"], df["method"])))
    if methods is not None:
        rank = {m: i for i, m in enumerate(methods)}
        sources = list(dict.fromkeys(df["source"]))
        order.sort(key=lambda sm: (sources.index(sm[0]), rank[sm[1]]))
    wide = df.pivot(index=["source", "method"], columns="condition", values="value")
    wide = wide.reindex(index=pd.MultiIndex.from_tuples(order, names=["source", "method"]),
                        columns=[c for c in CONDITIONS if c in set(df["condition"])])
    wide.columns.name = "condition"
    return wide
