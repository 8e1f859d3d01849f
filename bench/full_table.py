"""The paper-budget IEMOCAP-4 tables on this machine, projected from one measured fold (#18
point 6), old path and new side by side.

For each method (MoMKE; HARDY-MER, our default) and each path, ``run_experiment`` trains fold
0 of the ``iemocap4`` preset at full dims (a 512 / t 1024 / v 1024) under all six incomplete
conditions, exactly as a sweep cell would (shared stage 1, run folders, checkpoints, validation
every selection epoch), but for ``--epochs`` epochs per stage. The projection — labelled as
such — then scales each measured part to the papers' budgets and to five folds:

* per epoch, from the runs' own ``metrics.jsonl``: training plus validation seconds of every
  stage (MoMKE stage 1 shared per fold, stage 2 per condition; HARDY-MER's teacher per fold,
  its student's stage 1 per fold, stage 2 per condition), times the preset's epochs (MoMKE
  100 + 100; teacher 100 + 100, student 25 + 25);
* fine-tuning: one epoch of each modality, timed alone, times ``model.finetune_epochs``;
* everything else the measured run spent (data, FAISS indexes, hardness, neighbour lists,
  final evaluations, writing results): measured once per fold and counted once per fold.

Paths: ``old`` = ``model.skip_absent=false``, ``train.fused_optimizer=false``,
``train.checkpoint_every=1``, ``model.dropout_impl=torch`` (the defaults before the #18 changes); ``new`` = today's defaults;
``bf16`` = today's defaults with ``train.precision=bfloat16`` (training steps under autocast:
other numbers, so an option, not the default; ask for it with ``--paths new,bf16``).
Run it alone on the machine: about 15 min for both paths with ``--epochs 1`` on 2 cores.

Usage::

    python bench/full_table.py                          # both paths, 1 epoch per stage
    python bench/full_table.py --paths new --epochs 2 --out bench/results/full_table.json
    python bench/full_table.py --paths new,bf16         # bfloat16 autocast against float32
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utterance import OLD  # noqa: E402  (the old path's settings, one list for all benches)

N_FOLDS = 5
PATHS = {"old": OLD, "new": [], "bf16": ["train.precision=bfloat16"]}


def stage_epoch_seconds(out: Path) -> dict[str, list[float]]:
    """Per-epoch (training + validation) seconds of every trainer folder under ``out``, keyed
    by ``<folder kind>/<stage>``: shared stage 1, a condition cell, or the teacher."""
    got: dict[str, list[float]] = {}
    for f in sorted(out.rglob("metrics.jsonl")):
        rel = f.parent.relative_to(out).parts
        kind = "teacher" if "teacher" in rel else ("shared" if "_shared" in rel else "cell")
        for line in f.read_text().splitlines():
            r = json.loads(line)
            if kind == "cell" and r["stage"] == "unimodal":
                continue   # a cell's log repeats the shared stage 1 it started from
            got.setdefault(f"{kind}/{r['stage']}", []).append(
                r["train_seconds"] + r.get("eval_seconds", 0.0))
    return got


def finetune_epoch_seconds(ds, fold, model_cfg) -> float:
    import numpy as np
    import torch

    from hardymer.models.hardymer.finetune import FinetuneConfig, finetune_modality
    ft = FinetuneConfig(epochs=1, lr=model_cfg["finetune_lr"],
                        batch_size=model_cfg["finetune_batch"], net=model_cfg["finetune_net"],
                        seed=model_cfg["finetune_seed"])
    t0 = time.perf_counter()
    for m in ds.modalities:
        finetune_modality(ds, m, fold.train, np.array([], np.int64), ft, torch.device("cpu"))
    return time.perf_counter() - t0


def measure(method: str, path: str, ds, fold, conds, epochs: int) -> dict:
    from hardymer.runs.config import load_run_config
    from hardymer.runs.experiment import run_experiment

    paper = load_run_config(method, ds.family)      # the papers' budgets
    sets = [f"train.epochs={[epochs] * len(paper.train.epochs)}"]
    if method == "hardymer":
        sets += [f"model.teacher_epochs={[epochs, epochs]}", "model.finetune_epochs=1"]
    cfg = load_run_config(method, ds.family, sets + PATHS[path])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_experiment(cfg, ds, conds, [0], Path(tmp), progress=False)
        wall = time.perf_counter() - t0
        per = stage_epoch_seconds(Path(tmp))
    spent = sum(sum(v) for v in per.values())
    budget = {"shared/unimodal": paper.train.epochs[0], "cell/mixing": paper.train.epochs[1]}
    ft_epoch = 0.0
    if method == "hardymer":
        budget.update({"teacher/unimodal": paper.model["teacher_epochs"][0],
                       "teacher/teacher": paper.model["teacher_epochs"][1]})
        ft_epoch = finetune_epoch_seconds(ds, fold, cfg.model)
    epochs_part = 0.0
    for key, secs in per.items():
        if key not in budget:
            raise KeyError(f"no budget for the measured stage {key!r}")
        # Epochs measured per fold for this key (one per stage, or one per condition cell):
        # the mean epoch times the budget, once per folder that ran it.
        n_folders = len(secs) / epochs
        epochs_part += sum(secs) / len(secs) * budget[key] * n_folders
    fixed = wall - spent - ft_epoch      # the measured run fine-tuned one epoch per modality
    ft_part = ft_epoch * paper.model["finetune_epochs"] if method == "hardymer" else 0.0
    projected = N_FOLDS * (epochs_part + ft_part + fixed)
    return {"method": method, "path": path, "measured_wall_s": wall,
            "epoch_s": {k: sum(v) / len(v) for k, v in per.items()},
            "finetune_epoch_s": ft_epoch, "fixed_per_fold_s": fixed,
            "projected_table_s": projected}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="iemocap4")
    ap.add_argument("--methods", default="momke,hardymer")
    ap.add_argument("--paths", default="old,new", help=f"Comma-separated, of {', '.join(PATHS)}.")
    ap.add_argument("--epochs", type=int, default=1, help="measured epochs per stage")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("bench/results/full_table.json"))
    args = ap.parse_args()

    import torch

    from hardymer.data.synthetic import generate
    from hardymer.protocol import INCOMPLETE_CONDITIONS, make_folds, parse_condition

    torch.set_num_threads(args.threads)
    ds = generate(args.preset, seed=0)
    fold = make_folds(ds)[0]
    conds = [parse_condition(c, ds.modalities) for c in INCOMPLETE_CONDITIONS]
    rows = []
    for method in args.methods.split(","):
        for path in args.paths.split(","):
            r = measure(method, path, ds, fold, conds, args.epochs)
            rows.append(r)
            print(f"{method:9s} {path:3s}  measured {r['measured_wall_s']:6.0f} s  per epoch "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in r["epoch_s"].items())
                  + f"  fixed/fold {r['fixed_per_fold_s']:.0f} s  -> projected five-fold "
                  f"table {r['projected_table_s'] / 3600:.2f} h", flush=True)
    print("\nProjected, not measured end to end: five folds x six incomplete conditions at the "
          f"papers' budgets, {args.preset} shapes, {args.threads} threads")
    for r in rows:
        print(f"  {r['method']:9s} {r['path']:3s} {r['projected_table_s'] / 3600:6.2f} h")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"preset": args.preset, "threads": args.threads,
                                    "measured_epochs_per_stage": args.epochs,
                                    "machine": platform.machine(), "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
