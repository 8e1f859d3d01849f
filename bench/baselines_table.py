"""Every registered method on the same generated data: accuracy table and speed, in one run.

Part 1 (accuracy): each method trains on fold 0 of the ``iemocap4``-shaped preset (reduced dims
by default) under the six incomplete conditions and the full one, for each seed, through the
same trainer, protocol (validation selection) and metrics; the table gives test WA (%) as
mean ± std over seeds with the average over the six incomplete conditions.
Part 2 (speed): each method at its paper configuration on the preset at full dims, one epoch
of every stage on fold 0 under ``at``: seconds per training epoch of each stage, training
utterances per second, and the parameter count.

Usage::

    python bench/baselines_table.py                         # both parts, seeds 0 1 2
    python bench/baselines_table.py --methods mmin gcnet --seeds 0
    python bench/baselines_table.py --skip-speed --out docs/baselines-table.md
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

METHODS = ["zero-fill", "cpm-nets", "mmin", "if-mmin", "cif-mmin", "gcnet", "momke",
           "hardymer"]

# A short CPU budget (the papers train 40-200 epochs at full size): same optimiser settings for
# everyone, the models' own sizes scaled down where they are large.
COMMON = ["train.lr=1e-3", "train.batch_size=8"]
BUDGET = {
    "zero-fill": ["train.epochs=[14]", "model.hidden=64"],
    "cpm-nets": ["train.epochs=[60]", "model.latent_dim=128"],
    "mmin": ["train.epochs=[6,8]"],
    "if-mmin": ["train.epochs=[6,8]"],
    "cif-mmin": ["train.epochs=[6,8]"],
    "gcnet": ["train.epochs=[14]", "model.hidden=64", "model.graph_hidden=32"],
    "momke": ["train.epochs=[6,8]", "model.hidden=64", "model.depth=2"],
    "hardymer": ["train.epochs=[6,8]", "model.hidden=64", "model.depth=2",
                 "model.teacher_epochs=[6,10]"],
}


def accuracy(preset: str, dims: tuple[int, ...], seeds: list[int], methods: list[str],
             fold: int, runs: Path | None) -> pd.DataFrame:
    from hardymer.data.synthetic import generate
    from hardymer.protocol import all_fixed_conditions
    from hardymer.training.config import load_run_config
    from hardymer.training.experiment import run_experiment

    ds = generate(preset, seed=0, dims=dims)
    conds = all_fixed_conditions(ds.modalities)
    rows = []
    for seed in seeds:
        for name in methods:
            cfg = load_run_config(name, ds.family, COMMON + BUDGET[name] + [f"train.seed={seed}"])
            t0 = time.perf_counter()
            folder = None if runs is None else runs / f"{name}-s{seed}"
            recs = run_experiment(cfg, ds, conds, [fold], folder, progress=False)
            print(f"{name:10s} seed {seed}: {time.perf_counter() - t0:6.1f} s  "
                  + " ".join(f"{r['condition']} {100 * r['test_WA']:.1f}" for r in recs),
                  flush=True)
            rows += [{"method": name, "seed": seed, "condition": r["condition"],
                      "WA": 100 * r["test_WA"], "UA": 100 * r["test_UA"]} for r in recs]
    return pd.DataFrame(rows)


def table(df: pd.DataFrame, metric: str = "WA") -> pd.DataFrame:
    conds = list(dict.fromkeys(df.condition))
    incomplete = [c for c in conds if c != "atv"]
    avg = (df[df.condition.isin(incomplete)].groupby(["method", "seed"])[metric].mean()
           .reset_index().assign(condition="avg(6)"))
    g = pd.concat([df, avg]).groupby(["method", "condition"])[metric].agg(["mean", "std"])
    g = g.reset_index()
    g["cell"] = [f"{m:.1f} ± {0 if np.isnan(s) else s:.1f}" for m, s in zip(g["mean"], g["std"])]
    wide = g.pivot(index="method", columns="condition", values="cell")
    order = [m for m in METHODS if m in wide.index]
    return wide.loc[order, incomplete + ["avg(6)"] + (["atv"] if "atv" in conds else [])]


def speed(preset: str, methods: list[str]) -> pd.DataFrame:
    """One epoch per stage at the paper configuration, full dims, fold 0, condition ``at``."""
    import torch
    from hardymer.data.synthetic import generate
    from hardymer.protocol import make_folds, parse_condition
    from hardymer.training.config import load_run_config
    from hardymer.training.experiment import build_method, prepare_fold
    from hardymer.training.loaders import FoldData
    from hardymer.training.trainer import Trainer

    ds = generate(preset, seed=0)
    fold = make_folds(ds)[0]
    rows = []
    for name in methods:
        cfg = load_run_config(name, ds.family)
        n_stages = len(cfg.train.epochs)
        cfg.train.epochs = [1] * n_stages
        cfg.train.protocol = "val"
        if name == "hardymer":  # its per-fold preparation is timed on its own (bench_hardymer)
            cfg.model["teacher_epochs"] = [1, 1]
            cfg.model["finetune_epochs"] = 1
        t0 = time.perf_counter()
        context = prepare_fold(cfg, ds, fold, None, progress=False)
        prep = time.perf_counter() - t0
        data_ds = context.dataset if context is not None else ds
        method = build_method(cfg, data_ds)
        data = FoldData(data_ds, fold, parse_condition("at", ds.modalities), cfg.train.seed)
        method.attach(context, data, None)
        res = Trainer(cfg.train, None, progress=False).fit(method, data, final_eval=False)
        n_params = sum(p.numel() for p in method.parameters())
        for row in res.history:
            rows.append({"method": name, "stage": row["stage"],
                         "s/epoch": round(row["train_seconds"], 2),
                         "utt/s": round(row["train_utt_per_s"]),
                         "params (M)": round(n_params / 1e6, 2),
                         "batch (seq)": cfg.train.batch_size,
                         "fold prep (s)": round(prep, 1) if prep > 0.05 else 0.0})
        print(json.dumps(rows[-1]), flush=True)
        del method, context
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", default="iemocap4")
    ap.add_argument("--dims", default="64,128,128", help="Accuracy part only (speed: full dims).")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS, metavar="METHOD")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="Markdown file for the tables "
                    "(raw rows go to .csv files beside it).")
    ap.add_argument("--runs", type=Path, default=None, help="Keep run folders here (resumable).")
    args = ap.parse_args()
    from hardymer.evaluation.report import to_markdown
    parts = []
    if not args.skip_accuracy:
        dims = tuple(int(x) for x in args.dims.split(","))
        df = accuracy(args.preset, dims, args.seeds, args.methods, args.fold, args.runs)
        head = (f"Test WA (%) on synthetic {args.preset} (dims {args.dims}), fold {args.fold}, "
                f"validation selection, seeds {args.seeds}: mean ± std over seeds.\n\n")
        parts.append(head + to_markdown(table(df, "WA").reset_index()))
        parts.append("Test UA (%), same runs.\n\n" + to_markdown(table(df, "UA").reset_index()))
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            df.to_csv(args.out.with_suffix(".csv"), index=False)
    if not args.skip_speed:
        sp = speed(args.preset, args.methods)
        parts.append(f"Speed on synthetic {args.preset} at full dims, paper configurations, "
                     "fold 0, condition at, one epoch per stage.\n\n" + to_markdown(sp))
        if args.out:
            sp.to_csv(args.out.with_name(args.out.stem + "-speed.csv"), index=False)
    text = "\n\n".join(parts)
    print("\n" + text)
    if args.out:
        args.out.write_text(text + "\n")
        print(json.dumps({"written": str(args.out)}))


if __name__ == "__main__":
    main()
