"""What the paper's HARDY-MER table costs: per-epoch times, measured, and the table, extrapolated.

One fold of the ``iemocap4`` generated preset at full dims (a 512 / t 1024 / v 1024, ~4.4k
training utterances), one condition, a budget of one epoch per stage; the per-epoch training
times come from the runs' own ``metrics.jsonl`` (``train_seconds``, validation excluded) and a
timed fine-tuning epoch. Three forms, each trained end to end by ``run_experiment``:

* ``momke`` — MoMKE (the papers' baseline);
* ``hardymer`` — our default (fold-scoped fine-tuning, one teacher per fold, ``weights`` form);
* ``hardymer:reference`` — ``--reference-compat``: the reference's teacher per condition,
  per-batch hardness and retrieval, k + 1 views with one optimizer step each.

The extrapolation (labelled as such in the output) multiplies by the papers' budgets over
5 folds x 6 incomplete conditions: MoMKE 100 + 100 epochs per cell; HARDY-MER student 25 + 25
per cell, teacher 100 + 100 per fold (ours) or per cell (reference), fine-tuning
``finetune_epochs`` per modality per fold (ours) or once (reference). Evaluation passes are
not counted (under ``--protocol paper`` they add one test pass per epoch).

    python bench/reference_cost.py [--condition at] [--out bench/results/reference_cost.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

BUDGET = {"momke": (100, 100), "student": (25, 25), "teacher": (100, 100)}
N_FOLDS, N_COND = 5, 6


def epoch_seconds(folder: Path) -> dict[str, float]:
    """Mean ``train_seconds`` per stage name of a trainer folder's metrics.jsonl."""
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    out: dict[str, list[float]] = {}
    for r in rows:
        out.setdefault(r["stage"], []).append(r["train_seconds"])
    return {k: sum(v) / len(v) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="iemocap4")
    ap.add_argument("--condition", default="at")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import numpy as np
    import torch

    from hardymer.data.synthetic import generate
    from hardymer.models.hardymer.finetune import FinetuneConfig, finetune_modality
    from hardymer.protocol.conditions import parse_condition
    from hardymer.protocol.splits import make_folds
    from hardymer.runs.config import load_run_config
    from hardymer.runs.experiment import run_experiment

    ds = generate(args.preset, seed=0)
    cond = parse_condition(args.condition, ds.modalities)
    fold = make_folds(ds)[0]
    small = ["train.epochs=[1,1]", "train.protocol=val"]
    hardy = small + ["model.teacher_epochs=[1,1]", "model.finetune_epochs=1"]
    forms = {"momke": ("momke", small), "hardymer": ("hardymer", hardy),
             "hardymer:reference": ("hardymer", hardy + ["model.reference_compat=true"])}
    per_epoch: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (method, overrides) in forms.items():
            cfg = load_run_config(method, ds.family, overrides)
            out = Path(tmp) / name.replace(":", "-")
            t0 = time.perf_counter()
            run_experiment(cfg, ds, [cond], [0], out, progress=False)
            wall = time.perf_counter() - t0
            cell = next(out.glob(f"fold0/{cond.name}"))
            got = {f"student {k}": v for k, v in epoch_seconds(cell).items()}
            teachers = list(out.glob("fold0/**/teacher/metrics.jsonl"))
            if teachers:
                got.update({f"teacher {k}": v
                            for k, v in epoch_seconds(teachers[0].parent).items()})
            if method == "hardymer":   # one fine-tuning epoch of one modality, timed alone
                m = cfg.model
                ft = FinetuneConfig(epochs=1, lr=m["finetune_lr"], batch_size=m["finetune_batch"],
                                    net=m["finetune_net"], seed=m["finetune_seed"])
                t1 = time.perf_counter()
                for mod in ds.modalities:
                    finetune_modality(ds, mod, fold.train, np.array([], np.int64), ft,
                                      torch.device("cpu"))
                got["fine-tuning (3 modalities)"] = time.perf_counter() - t1
            got["wall, 1 epoch per stage"] = wall
            per_epoch[name] = got
            print(name, {k: round(v, 2) for k, v in got.items()}, flush=True)

    def table(name: str) -> float:
        e = per_epoch[name]
        if name == "momke":
            return N_FOLDS * N_COND * (BUDGET["momke"][0] * e["student unimodal"]
                                       + BUDGET["momke"][1] * e["student mixing"])
        student = N_FOLDS * N_COND * (BUDGET["student"][0] * e["student unimodal"]
                                      + BUDGET["student"][1] * e["student mixing"])
        teacher_runs = N_FOLDS * (N_COND if name.endswith("reference") else 1)
        t = e.get("teacher unimodal", 0) * BUDGET["teacher"][0] + \
            e.get("teacher teacher", 0) * BUDGET["teacher"][1]
        ft_epochs = load_run_config("hardymer", ds.family,
                                    ["model.reference_compat=true"] if name.endswith("reference")
                                    else []).model["finetune_epochs"]
        ft = e["fine-tuning (3 modalities)"] * ft_epochs * (1 if name.endswith("reference")
                                                             else N_FOLDS)
        return student + teacher_runs * t + ft

    projected = {n: table(n) for n in per_epoch}
    print("\nExtrapolated from the per-epoch times above (not measured end to end): the "
          f"five-fold, six-condition table at the papers' budgets, {args.preset} shapes")
    for n, s in projected.items():
        print(f"  {n:20s} {s / 3600:6.1f} h")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "preset": args.preset, "condition": args.condition, "per_epoch_s": per_epoch,
            "projected_table_s": projected, "machine": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
            indent=1) + "\n")


if __name__ == "__main__":
    main()
