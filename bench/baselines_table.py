"""Every registered method on the same generated data: accuracy table and speed, in one run.

Part 1 (accuracy): each method trains on fold 0 of the ``iemocap4``-shaped preset (reduced dims
by default) under the six incomplete conditions and the full one, for each seed, through the
same trainer, protocol (validation selection) and metrics; the table gives test WA (%) as
mean ± std over seeds with the average over the six incomplete conditions.
Part 2 (speed): each method at its paper configuration on the preset at full dims, one epoch
of every stage on fold 0 under ``at``: seconds per training epoch of each stage, training
utterances per second, seconds of one validation pass (model selection runs one per epoch;
CPM-Nets fits latents in it), and the parameter count.

Usage::

    python bench/baselines_table.py                         # both parts, seeds 0 1 2
    python bench/baselines_table.py --methods mmin gcnet --seeds 0
    python bench/baselines_table.py --skip-speed --runs runs/bt    # resumable; adds s/epoch
    python bench/baselines_table.py --skip-speed --out docs/baselines-table.md
    python bench/baselines_table.py --methods gcnet momke --seeds 0 --skip-speed \
        --data-set persistence=0.0          # control: no emotion persistence in dialogues
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
from accuracy_table import run_grid, table  # the sibling script: one loop, one table layout

METHODS = ["zero-fill", "cpm-nets", "mctn", "mmin", "if-mmin", "cif-mmin", "mran-like", "gcnet",
           "sdr-gnn", "gsdnet-like", "imder", "momke", "primd", "hardymer"]

# A short CPU budget (the papers train 40-200 epochs at full size): same optimiser settings for
# everyone, the models' own sizes scaled down where they are large.
# CPM-Nets keeps its own full-batch schedule (one step per epoch on the whole training set).
COMMON = ["train.lr=1e-3", "train.batch_size=8"]
BUDGET = {
    "zero-fill": COMMON + ["train.epochs=[14]", "model.hidden=64"],
    "cpm-nets": ["train.epochs=[100]", "model.latent_dim=128", "model.test_steps=100"],
    "mmin": COMMON + ["train.epochs=[6,8]"],
    "if-mmin": COMMON + ["train.epochs=[6,8]"],
    "cif-mmin": COMMON + ["train.epochs=[6,8]"],
    "gcnet": COMMON + ["train.epochs=[14]", "model.hidden=64", "model.graph_hidden=32"],
    "sdr-gnn": COMMON + ["train.epochs=[14]", "model.hidden=64", "model.graph_hidden=32"],
    "mctn": COMMON + ["train.epochs=[14]"],                  # hidden 32: the reference's size
    "mran-like": COMMON + ["train.epochs=[14]", "model.hidden=64"],
    # The diffusion methods sample 20 steps instead of 100 in this budget (both, in training
    # and evaluation), IMDer refines with 4 blocks instead of 20.
    "gsdnet-like": COMMON + ["train.epochs=[14]", "model.hidden=64", "model.graph_hidden=32",
                             "model.sampling_steps=20"],
    "imder": COMMON + ["train.epochs=[6,8]", "model.sampling_steps=20", "model.refine_blocks=4"],
    "momke": COMMON + ["train.epochs=[6,8]", "model.hidden=64", "model.depth=2"],
    "primd": COMMON + ["train.epochs=[6,8]", "model.hidden=64"],
    "hardymer": COMMON + ["train.epochs=[6,8]", "model.hidden=64", "model.depth=2",
                 "model.teacher_epochs=[6,10]"],
}


def accuracy(preset: str, dims: tuple[int, ...], seeds: list[int], methods: list[str],
             fold: int, runs: Path | None, data_overrides: dict | None = None) -> pd.DataFrame:
    configs = {name: (name, BUDGET[name]) for name in methods}
    return run_grid(preset, dims, seeds, configs, fold, runs, metrics=("WA", "UA"),
                    data_overrides=data_overrides)


def costs(preset: str, dims: tuple[int, ...], methods: list[str], seeds: list[int],
          runs: Path) -> pd.DataFrame:
    """Per method at the accuracy part's budget and dims: median seconds of one training epoch
    of its conditioned (last) stage over every cell in ``runs`` (the median: a resumed or
    paused cell's one long epoch does not move it), and the parameter count."""
    from hardymer.data.synthetic import generate
    from hardymer.runs.config import load_run_config
    from hardymer.runs.experiment import build_method

    ds = generate(preset, seed=0, dims=dims)
    rows = []
    for name in methods:
        method = build_method(load_run_config(name, ds.family, BUDGET[name]), ds)
        last = method.stages([1] * len(method.stage_names))[-1].name
        secs = [r["train_seconds"] for seed in seeds
                for f in (runs / f"{name}-s{seed}").glob("fold*/*/metrics.jsonl")
                for r in map(json.loads, f.read_text().splitlines()) if r["stage"] == last]
        rows.append({"method": name,
                     "s/epoch": round(float(pd.Series(secs).median()), 2) if secs else float("nan"),
                     "params (M)": round(sum(p.numel() for p in method.parameters()) / 1e6, 3)})
    return pd.DataFrame(rows)


def speed(preset: str, methods: list[str]) -> pd.DataFrame:
    """One epoch per stage at the paper configuration, full dims, fold 0, condition ``at``."""
    import torch
    from hardymer.data.synthetic import generate
    from hardymer.protocol import make_folds, parse_condition
    from hardymer.runs.config import load_run_config
    from hardymer.runs.experiment import build_method, prepare_fold
    from hardymer.training.loaders import FoldData
    from hardymer.training.trainer import Trainer, evaluate

    def method_device(m):
        return next(m.parameters()).device

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
        t0 = time.perf_counter()  # one validation pass (CPM-Nets fits latents in it)
        evaluate(method, data.eval_loader("val", cfg.train.eval_batch_size), method_device(method))
        val_s = time.perf_counter() - t0
        n_params = sum(p.numel() for p in method.parameters())
        for row in res.history:
            rows.append({"method": name, "stage": row["stage"],
                         "s/epoch": round(row["train_seconds"], 2),
                         "utt/s": round(row["train_utt_per_s"]),
                         "val pass (s)": round(val_s, 2),
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
    ap.add_argument("--data-set", nargs="+", default=[], metavar="FIELD=VALUE",
                    help="Generator fields for the accuracy part, e.g. persistence=0.0 (no "
                         "emotion persistence in dialogues: a control for context use).")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="Markdown file for the tables "
                    "(raw rows go to .csv files beside it).")
    ap.add_argument("--runs", type=Path, default=None, help="Keep run folders here (resumable).")
    args = ap.parse_args()
    from hardymer.reports.tables import to_markdown
    parts = []
    if not args.skip_accuracy:
        dims = tuple(int(x) for x in args.dims.split(","))
        overrides = {k: float(v) for k, v in (x.split("=", 1) for x in args.data_set)}
        df = accuracy(args.preset, dims, args.seeds, args.methods, args.fold, args.runs,
                      overrides)
        changed = f", generator {overrides}" if overrides else ""
        head = (f"Test WA (%) on synthetic {args.preset} (dims {args.dims}{changed}), fold "
                f"{args.fold}, validation selection, seeds {args.seeds}: mean ± std over "
                "seeds.\n\n")
        conds = list(dict.fromkeys(df.condition))
        for metric in ("WA", "UA"):
            wide = table(df, conds, METHODS, metric).reset_index().rename(
                columns={"variant": "method"})
            parts.append((head if metric == "WA" else "Test UA (%), same runs.\n\n")
                         + to_markdown(wide))
        if args.runs is not None:
            cost = costs(args.preset, dims, args.methods, args.seeds, args.runs)
            parts.append("Cost at this budget and these dims: median seconds of one training epoch "
                         "of the conditioned stage (all cells of the runs above; HARDY-MER's "
                         "teacher and fine-tuning epochs not included) and parameters of the "
                         "final model.\n\n" + to_markdown(cost))
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
