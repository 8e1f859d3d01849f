"""HARDY-MER cost: stage-2 epoch time vs MoMKE, one-off preparation, and the per-step variant.

On the ``iemocap4`` synthetic preset at full dims (a 512 / t 1024 / v 1024, fold 0, ~4.4k
training utterances) under one condition, in the same process and run:

* seconds per stage-2 (conditioned) training epoch of MoMKE, of HARDY-MER with the default
  ``weights`` form of ``L_sup`` (hardness and neighbours precomputed once per fold and
  condition), with the ``explicit`` form (supports' dialogues forwarded every step), and with
  ``plan_scope=step`` (teacher forward + FAISS search + explicit supports inside every step,
  the reference code's cost profile); each with its ratio to MoMKE;
* one-off preparation of the fold: feature fine-tuning, a teacher epoch, building the FAISS
  indexes, hardness of every training sample, and the ranked neighbour lists.

Training steps are timed without validation passes; the teacher is trained only as long as
needed to exist (its quality does not change the cost). Models at the reference width
(hidden 256, depth 4).

Usage::

    python bench/bench_hardymer.py                     # 2 timed epochs each, condition at
    python bench/bench_hardymer.py --epochs 1 --condition tv --out bench/results/hardymer.json
    python bench/bench_hardymer.py --epochs 2 --condition random:0.3   # plan redrawn per epoch
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path


def timed_epochs(method, data, stage, epochs: int, batch_size: int, device) -> float:
    """Mean seconds per training epoch (forward, backward, step), after one warm-up batch."""
    import torch
    method.to(device).train()
    opt = method.configure_optimizer(1e-4, 1e-5, fused=True)   # the trainer's default
    times = []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        method.on_epoch_start(epoch, stage, data)
        for batch in data.train_loader(epoch, True, batch_size):
            loss, _ = method.stage_loss(batch.to(device), stage)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sum(times) / len(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", default="iemocap4")
    ap.add_argument("--condition", default="at")
    ap.add_argument("--epochs", type=int, default=2, help="Timed epochs per variant.")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="Write the figures as JSON.")
    ap.add_argument("--variants", default="momke,weights,explicit,step",
                    help="Which stage-2 variants to time (comma-separated; the explicit and "
                    "per-step ones take minutes per epoch under random:p).")
    args = ap.parse_args()

    import numpy as np
    import torch

    from hardymer.data.synthetic import generate
    from hardymer.models.hardymer.estimate import combine_hardness, hardness_terms
    from hardymer.models.hardymer.plan import rank_candidates
    from hardymer.models import create_method
    from hardymer.protocol import make_folds, parse_condition
    from hardymer.retrieval import FeatureDatabase
    from hardymer.runs.config import load_run_config
    from hardymer.runs.experiment import prepare_fold
    from hardymer.training.loaders import FoldData
    from hardymer.training.trainer import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device("auto")
    ds = generate(args.preset, seed=0)
    fold = make_folds(ds)[0]
    cond = parse_condition(args.condition, ds.modalities)
    res = {"preset": args.preset, "condition": cond.name, "n_train_utterances": 0,
           "device": str(device), "torch_threads": torch.get_num_threads(),
           "python": platform.python_version(), "torch": torch.__version__}

    # --- one-off preparation of the fold -----------------------------------------------------
    cfg = load_run_config("hardymer", ds.family, ["model.teacher_epochs=[0,1]",
                                                  "model.finetune_epochs=1"])
    t0 = time.perf_counter()
    ctx = prepare_fold(cfg, ds, fold, None, progress=False)
    res["prepare_s (fine-tune 1 epoch + teacher 1 epoch + indexes)"] = time.perf_counter() - t0
    res["n_train_utterances"] = int(len(ctx.train_ids))
    data = FoldData(ctx.dataset, fold, cond, seed=0)
    mask = data.train_mask(1)
    feats = {m: np.asarray(ctx.dataset.features[m][ctx.complete_ids], np.float32)
             for m in ds.modalities}
    t0 = time.perf_counter()
    db = FeatureDatabase.build(feats, ids=ctx.complete_ids)
    res["index_build_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    terms = hardness_terms(ctx.teacher, ctx.teacher_dataset, fold.train, mask, ctx.complete_ids,
                           device)
    combine_hardness(terms.h_dir, terms.h_ind)
    res["hardness_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rank_candidates(db, ctx.dataset.features, ctx.train_ids, mask[ctx.train_ids], cfg.model["k"])
    res["neighbour_lists_s"] = time.perf_counter() - t0
    res["plan_total_s"] = res["index_build_s"] + res["hardness_s"] + res["neighbour_lists_s"]
    if not cond.is_random:   # fixed: one plan per cell, cached, as training does; random:
        ctx.plan(mask, 1, None)   # a plan per epoch, inside the timed epochs

    # --- stage-2 epochs ---------------------------------------------------------------------
    momke = load_run_config("momke", ds.family)
    variants = {"momke": ("momke", momke.model),
                "hardymer (weights)": ("hardymer", {**cfg.model, "sup_form": "weights"}),
                "hardymer (explicit)": ("hardymer", {**cfg.model, "sup_form": "explicit"}),
                "hardymer (per-step search, reference)": ("hardymer",
                                                          {**cfg.model, "plan_scope": "step"})}
    short = {"momke": "momke", "weights": "hardymer (weights)",
             "explicit": "hardymer (explicit)", "step": "hardymer (per-step search, reference)"}
    wanted = {short[v] for v in args.variants.split(",")} | {"momke"}
    variants = {k: v for k, v in variants.items() if k in wanted}
    epoch_s = {}
    for name, (method_name, model_cfg) in variants.items():
        torch.manual_seed(0)
        m = create_method(method_name, ctx.dataset.dims if method_name == "hardymer"
                          else ds.dims, ds.n_classes, ds.task, **model_cfg)
        d = data if method_name == "hardymer" else FoldData(ds, fold, cond, seed=0)
        m.attach(ctx if method_name == "hardymer" else None, d, None)
        stage = m.stages([1, 1])[1]
        epoch_s[name] = timed_epochs(m, d, stage, args.epochs, args.batch_size, device)
        print(f"{name:40s} {epoch_s[name]:7.2f} s/epoch "
              f"({epoch_s[name] / epoch_s['momke']:.2f}x MoMKE)", flush=True)
    res["stage2_epoch_s"] = epoch_s
    res["ratio_to_momke"] = {k: v / epoch_s["momke"] for k, v in epoch_s.items()}
    if {"hardymer (per-step search, reference)", "hardymer (weights)"} <= set(epoch_s):
        res["step_search_vs_precomputed"] = (epoch_s["hardymer (per-step search, reference)"]
                                             / epoch_s["hardymer (weights)"])
    print(json.dumps(res, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
