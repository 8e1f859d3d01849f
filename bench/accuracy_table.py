"""Accuracy table on generated data: zero-fill, MoMKE, HARDY-MER and its ablations.

Trains every variant on the same folds, conditions and seeds of a planted-hardness preset and
prints (and writes) the test WA per condition as mean ± std over seeds, with the average over
the six incomplete conditions. Everything else equal, variants differ only by the switches
shown in ``VARIANTS``.

Usage::

    python bench/accuracy_table.py                       # iemocap4 at dims 64/128/128, fold 0,
                                                         # seeds 0 1 2 (about 25 min, 2 cores)
    python bench/accuracy_table.py --seeds 0 --variants momke hardymer
    python bench/accuracy_table.py --out bench/results/accuracy.md
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from hardymer.models.hardymer import ABLATIONS
from hardymer.runs.sweep import split_scope

# name -> (method, overrides)
VARIANTS = {
    "zero-fill": ("zero-fill", []),
    "momke": ("momke", []),
    "hardymer": ("hardymer", []),
    "w/o h_dir": ("hardymer", list(ABLATIONS["no-h-dir"].overrides)),
    "w/o h_ind": ("hardymer", list(ABLATIONS["no-h-ind"].overrides)),
    "w/o h": ("hardymer", list(ABLATIONS["no-h"].overrides)),
    "w/o retrieval": ("hardymer", list(ABLATIONS["no-retrieval"].overrides)),
    "w/o fine-tuning": ("hardymer", list(ABLATIONS["no-finetune"].overrides)),
    "reference-compat": ("hardymer", ["model.reference_compat=true"]),
    # ours, not the paper's: cross-fitted fine-tuned features (docs/hardymer.md)
    "hardymer + cross-fit": ("hardymer", ["model.finetune_crossfit=5"]),
    # loss weights other than the reference's 1, 1
    "hardymer λ_rec=0.1": ("hardymer", ["model.lambda_rec=0.1"]),
    "hardymer λ_sup=0.3": ("hardymer", ["model.lambda_sup=0.3"]),
}

# Variants left out unless asked for: their explicit support forwards cost ~10x per epoch.
SLOW = {"reference-compat"}

# A short CPU budget shared by every method (the papers: 100 + 100 epochs at lr 1e-4).
BUDGET = {"momke": ["train.epochs=[6,8]"], "hardymer": ["train.epochs=[6,8]",
                                                        "model.teacher_epochs=[6,10]"],
          "zero-fill": ["train.epochs=[14]"]}
COMMON = ["model.hidden=64", "train.lr=1e-3", "train.batch_size=8"]
DEPTH = {"momke": ["model.depth=2"], "hardymer": ["model.depth=2"], "zero-fill": []}


def scoped(sets: list[str], method: str) -> list[str]:
    """The ``--set`` overrides for one method: ``key=value`` for every method,
    ``METHOD:key=value`` for that method only (parsed as ``hardymer sweep`` parses them)."""
    return [override for name, override in map(split_scope, sets) if name in ("", method)]


def run(preset: str, dims: tuple[int, ...], seeds: list[int], variants: list[str], fold: int,
        out_dir: Path | None, sets: list[str] = ()) -> pd.DataFrame:
    configs = {name: (VARIANTS[name][0], COMMON + DEPTH[VARIANTS[name][0]]
                      + BUDGET[VARIANTS[name][0]] + VARIANTS[name][1]
                      + scoped(list(sets), VARIANTS[name][0])) for name in variants}
    return run_grid(preset, dims, seeds, configs, fold, out_dir)


def run_grid(preset: str, dims: tuple[int, ...], seeds: list[int],
             configs: dict[str, tuple[str, list[str]]], fold: int, out_dir: Path | None,
             metrics: tuple[str, ...] = ("WA",), data_overrides: dict | None = None
             ) -> pd.DataFrame:
    """Each named (method, overrides) on one fold, all seven conditions, every seed.

    ``data_overrides``: generator fields to change (e.g. ``{"persistence": 0.0}``).
    Returns one row per (variant, seed, condition) with the test metrics in percent.
    """
    from hardymer.data.synthetic import generate
    from hardymer.protocol import all_fixed_conditions
    from hardymer.runs.config import load_run_config
    from hardymer.runs.experiment import run_experiment

    ds = generate(preset, seed=0, dims=dims, **(data_overrides or {}))
    conds = all_fixed_conditions(ds.modalities)
    rows = []
    for seed in seeds:
        for name, (method, overrides) in configs.items():
            cfg = load_run_config(method, ds.family, overrides + [f"train.seed={seed}"])
            t0 = time.perf_counter()
            slug = name.replace("/", "").replace(" ", "-")
            folder = None if out_dir is None else out_dir / f"{slug}-s{seed}"
            recs = run_experiment(cfg, ds, conds, [fold], folder, progress=False)
            print(f"{name:18s} seed {seed}: {time.perf_counter() - t0:6.1f} s  "
                  + " ".join(f"{r['condition']} {100 * r['test_WA']:.1f}" for r in recs),
                  flush=True)
            rows += [{"variant": name, "seed": seed, "condition": r["condition"],
                      **{m: 100 * r[f"test_{m}"] for m in metrics}} for r in recs]
    return pd.DataFrame(rows)


def table(df: pd.DataFrame, conds: list[str], order: list[str] | None = None,
          metric: str = "WA") -> pd.DataFrame:
    """variant × (six incomplete conditions, their average, atv): 'mean ± std' over seeds."""
    incomplete = [c for c in conds if c != "atv"]
    avg = (df[df.condition.isin(incomplete)].groupby(["variant", "seed"])[metric].mean()
           .reset_index().assign(condition="avg(6)"))
    full = pd.concat([df, avg])
    g = full.groupby(["variant", "condition"])[metric].agg(["mean", "std"]).reset_index()
    g["cell"] = [f"{m:.1f} ± {0 if np.isnan(s) else s:.1f}" for m, s in zip(g["mean"], g["std"])]
    wide = g.pivot(index="variant", columns="condition", values="cell")
    order = [v for v in (order or VARIANTS) if v in wide.index]
    return wide.loc[order, incomplete + ["avg(6)"] + (["atv"] if "atv" in conds else [])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", default="iemocap4")
    ap.add_argument("--dims", default="64,128,128")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=[v for v in VARIANTS if v not in SLOW],
                    choices=list(VARIANTS), metavar="VARIANT",
                    help=f"Default: all but {sorted(SLOW)} (explicit L_sup form: about 10x "
                         "the training time; ask for it by name).")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="Markdown file for the table "
                    "(a .csv of the raw rows is written beside it).")
    ap.add_argument("--runs", type=Path, default=None, help="Keep run folders here (resumable).")
    ap.add_argument("--set", dest="sets", nargs="+", default=[], metavar="[METHOD:]KEY=VALUE",
                    help="Config overrides after the variants' own: KEY=VALUE for every "
                         "method, METHOD:KEY=VALUE for one (e.g. momke:model.skip_absent=false).")
    args = ap.parse_args()
    dims = tuple(int(x) for x in args.dims.split(","))
    df = run(args.preset, dims, args.seeds, args.variants, args.fold, args.runs, args.sets)
    conds = list(dict.fromkeys(df.condition))
    wide = table(df, conds)
    from hardymer.reports.tables import to_markdown
    md = to_markdown(wide.reset_index())
    head = (f"Test WA (%) on synthetic {args.preset} (dims {args.dims}), fold {args.fold}, "
            f"validation selection, seeds {args.seeds}: mean ± std over seeds.\n\n")
    print("\n" + head + md)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(head + md + "\n")
        df.to_csv(args.out.with_suffix(".csv"), index=False)
        print(json.dumps({"written": str(args.out)}))


if __name__ == "__main__":
    main()
