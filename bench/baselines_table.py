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
    python bench/baselines_table.py --skip-speed --workers 2 --rows docs/baselines-rows.csv
                    # two one-thread processes; every finished (method, seed) appends its rows
                    # to the CSV, and a later run (another session) skips what it holds
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
    # rec_heads 32: the reference's head width (2560 / 256 = 10) at these dims' 320 inputs;
    # the default's largest divisor of 320 below 256 is 160 heads of width 2, 5x the time.
    "sdr-gnn": COMMON + ["train.epochs=[14]", "model.hidden=64", "model.graph_hidden=32",
                         "model.rec_heads=32"],
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


# Slowest first, so that two workers finish together (one-thread minutes per seed, 2026-12-03).
COST_ORDER = ["imder", "gsdnet-like", "sdr-gnn", "gcnet", "hardymer", "mmin", "primd",
              "if-mmin", "momke", "cif-mmin", "cpm-nets", "mctn", "mran-like", "zero-fill"]
ROW_KEYS = ["method", "seed", "condition"]


def _commit() -> str:
    import subprocess
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def unit_rows(preset: str, dims: tuple[int, ...], name: str, seed: int, fold: int,
              folder: Path | None, data_overrides: dict | None = None,
              threads: int | None = None) -> list[dict]:
    """One method and seed on every condition: a row per condition with test WA / UA (%),
    the median seconds of a training epoch of the conditioned (last) stage, the parameter
    count and the code's commit. Runs in a worker process under ``--workers``."""
    import tempfile

    import torch
    if threads:
        torch.set_num_threads(threads)
    from hardymer.data.synthetic import generate
    from hardymer.protocol import all_fixed_conditions
    from hardymer.runs.config import load_run_config
    from hardymer.runs.experiment import build_method, run_experiment

    ds = generate(preset, seed=0, dims=dims, **(data_overrides or {}))
    cfg = load_run_config(name, ds.family, BUDGET[name] + [f"train.seed={seed}"])
    method = build_method(cfg, ds)
    last = method.stages([1] * len(method.stage_names))[-1].name
    params = round(sum(p.numel() for p in method.parameters()) / 1e6, 3)
    del method
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = folder if folder is not None else Path(tmp) / "run"
        t0 = time.perf_counter()
        recs = run_experiment(cfg, ds, all_fixed_conditions(ds.modalities), [fold], run_dir,
                              progress=False)
        rows = []
        for r in recs:
            secs = [e["train_seconds"] for f in run_dir.glob(f"fold*/{r['condition']}/metrics.jsonl")
                    for e in map(json.loads, f.read_text().splitlines()) if e["stage"] == last]
            rows.append({"method": name, "seed": seed, "condition": r["condition"],
                         "WA": 100 * r["test_WA"], "UA": 100 * r["test_UA"],
                         "s/epoch": float(pd.Series(secs).median()) if secs else float("nan"),
                         "params (M)": params, "commit": _commit()})
    print(f"{name:12s} seed {seed}: {time.perf_counter() - t0:7.1f} s  "
          + " ".join(f"{r['condition']} {r['WA']:.1f}" for r in rows), flush=True)
    return rows


def accuracy_rows(preset: str, dims: tuple[int, ...], seeds: list[int], methods: list[str],
                  fold: int, runs: Path | None, rows_file: Path, workers: int,
                  data_overrides: dict | None = None) -> pd.DataFrame:
    """Every (method, seed) not yet in ``rows_file``, slowest first, in ``workers`` spawned
    one-thread processes; each finished unit's rows are appended to the file at once, so an
    interrupted run (or a later session) loses only the units in progress."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    done = pd.read_csv(rows_file) if rows_file.exists() else pd.DataFrame(columns=ROW_KEYS)
    have = {(m, int(s)) for (m, s), g in done.groupby(["method", "seed"]) if len(g) >= 7}
    order = {m: i for i, m in enumerate(COST_ORDER)}
    todo = sorted(((m, s) for m in methods for s in seeds if (m, s) not in have),
                  key=lambda u: (order.get(u[0], -1), u[1]))
    print(json.dumps({"rows": str(rows_file), "done": len(have), "todo": len(todo)}), flush=True)

    def folder(m, s):
        return None if runs is None else runs / f"{m}-s{s}"

    def append(rows):
        rows_file.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(rows_file, mode="a", header=not rows_file.exists(),
                                  index=False)
    if workers <= 1:
        for m, s in todo:
            append(unit_rows(preset, dims, m, s, fold, folder(m, s), data_overrides))
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(unit_rows, preset, dims, m, s, fold, folder(m, s),
                                   data_overrides, 1) for m, s in todo]
            for f in as_completed(futures):
                append(f.result())
    df = pd.read_csv(rows_file) if rows_file.exists() else pd.DataFrame(columns=ROW_KEYS)
    df = df[df.method.isin(methods) & df.seed.isin(seeds)]
    return df.drop_duplicates(ROW_KEYS, keep="last").rename(columns={"method": "variant"})


def row_costs(df: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """s/epoch (median over the cells of each cell's median epoch) and parameters."""
    g = df.groupby("variant").agg({"s/epoch": "median", "params (M)": "first"})
    return (g.reindex([m for m in methods if m in g.index]).round({"s/epoch": 2})
            .reset_index().rename(columns={"variant": "method"}))


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
    ap.add_argument("--rows", type=Path, default=None, help="CSV of finished cells (one row "
                    "per method, seed and condition, with s/epoch, parameters and commit): "
                    "appended as each (method, seed) finishes; those it holds are not rerun.")
    ap.add_argument("--workers", type=int, default=1, help="Processes of one torch thread "
                    "each for the accuracy part (needs --rows); 2 on a 2-core machine.")
    args = ap.parse_args()
    if args.workers > 1 and args.rows is None:
        ap.error("--workers needs --rows FILE.csv (the parent collects the workers' rows there)")
    from hardymer.reports.tables import to_markdown
    parts = []
    if not args.skip_accuracy:
        dims = tuple(int(x) for x in args.dims.split(","))
        overrides = {k: float(v) for k, v in (x.split("=", 1) for x in args.data_set)}
        if args.rows is not None:
            df = accuracy_rows(args.preset, dims, args.seeds, args.methods, args.fold,
                               args.runs, args.rows, args.workers, overrides)
        else:
            df = accuracy(args.preset, dims, args.seeds, args.methods, args.fold, args.runs,
                          overrides)
        changed = f", generator {overrides}" if overrides else ""
        head = (f"Test WA (%) on synthetic {args.preset} (dims {args.dims}{changed}), fold "
                f"{args.fold}, validation selection, seeds {args.seeds}: mean ± std over "
                "seeds.\n\n")
        n_seeds = df.groupby("variant").seed.nunique()
        if (n_seeds < len(args.seeds)).any():
            head += ("Not every method has every seed yet: "
                     + ", ".join(f"{m} {n}" for m, n in n_seeds.items()) + ".\n\n")
        conds = list(dict.fromkeys(df.condition))
        for metric in ("WA", "UA"):
            wide = table(df, conds, METHODS, metric).reset_index().rename(
                columns={"variant": "method"})
            parts.append((head if metric == "WA" else "Test UA (%), same runs.\n\n")
                         + to_markdown(wide))
        if args.rows is not None:
            parts.append("Cost at this budget and these dims: median seconds of one training "
                         "epoch of the conditioned stage (median over the cells of each cell's "
                         "median; one torch thread per process; HARDY-MER's teacher and "
                         "fine-tuning epochs not included) and parameters of the final "
                         "model.\n\n" + to_markdown(row_costs(df, args.methods)))
        elif args.runs is not None:
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
