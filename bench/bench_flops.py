"""How near the hardware a MoMKE stage-2 training step runs (#18 point 5): achieved FLOP/s
against this machine's float32 GEMM peak, old path and new side by side.

* Peak: the best of several ``torch.mm`` of two 2048 x 2048 float32 matrices on ``--threads``
  threads (2 n^3 FLOPs each).
* A step: forward, backward and optimizer step of MoMKE's stage 2 (experts mixing) on one
  training batch; its FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode``
  (matrix products and attention: what the hardware peak is about; element-wise work is not
  counted, so the ratio is a lower bound of the machine's use). Time: the mean over
  ``--steps`` steps after two untimed ones, cycling through the fold's batches.
* Paths: ``old`` = ``model.skip_absent=false``, ``train.fused_optimizer=false``,
  ``model.dropout_impl=torch``, the one-key attention shortcut off; ``new`` = today's defaults. The new path skips work, so it counts
  fewer FLOPs per step; ``useful`` divides the new path's FLOPs (the work the result needs)
  by each path's time, which compares the two on the same work. ``bf16`` (asked for with
  ``--paths``) is the new path with the step's forward pass under bfloat16 autocast
  (``train.precision=bfloat16``); its ratio is still taken against the float32 peak, and the
  bfloat16 GEMM peak is printed beside it.
* Data: the ``iemocap4`` preset at full dims (a 512 / t 1024 / v 1024; batches of 16
  dialogues) and the utterance-level set of ``bench_utterance.py`` (batches of 16 one-utterance
  sequences, and of 256 utterances with ``train.batch_utterances``), condition ``at``.

Usage::

    python bench/bench_flops.py                      # about 2 min on 2 cores
    python bench/bench_flops.py --out bench/results/flops.json
    python bench/bench_flops.py --paths new,bf16 --steps 4   # bfloat16 autocast against float32
"""
from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utterance import OLD, set_one_key_shortcut, utterance_level_data  # noqa: E402


def gemm_peak(threads: int, n: int = 2048, repeats: int = 5, dtype=None) -> float:
    import torch
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def step_figures(ds, batch_utterances, path: str, steps: int) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from hardymer.protocol import make_folds, parse_condition
    from hardymer.runs.config import load_run_config
    from hardymer.runs.experiment import build_method
    from hardymer.training.loaders import FoldData
    from hardymer.training.trainer import precision_context

    old = path == "old"
    cfg = load_run_config("momke", ds.family, OLD if old else [])   # checkpoints: unused here
    data = FoldData(ds, make_folds(ds)[0], parse_condition("at", ds.modalities), seed=0)
    torch.manual_seed(0)
    method = build_method(cfg, ds)
    set_one_key_shortcut(method, not old)
    opt = method.configure_optimizer(cfg.train.lr, cfg.train.weight_decay,
                                     fused=cfg.train.fused_optimizer)
    stage = {s.name: s for s in method.stages([1, 1])}["mixing"]
    batches = list(data.train_loader(1, True, cfg.train.batch_size, None, batch_utterances))
    method.train()

    precision = "bfloat16" if path == "bf16" else "float32"

    def step(batch):
        with precision_context(precision, torch.device("cpu")):   # as the trainer's step
            loss, _ = method.stage_loss(batch, stage)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        step(batches[0])
    flops = counter.get_total_flops() / batches[0].n_utterances   # per utterance
    cycle = itertools.cycle(batches[1:] or batches)
    for _ in range(2):
        step(next(cycle))
    n_utt, t0 = 0, time.perf_counter()
    for _ in range(steps):
        b = next(cycle)
        step(b)
        n_utt += b.n_utterances
    secs = time.perf_counter() - t0
    return {"flops_per_utt": flops, "utt_per_s": n_utt / secs,
            "flop_per_s": flops * n_utt / secs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--paths", default="old,new", help="Comma-separated, of old, new, bf16.")
    ap.add_argument("--out", type=Path, default=Path("bench/results/flops.json"))
    args = ap.parse_args()
    paths = args.paths.split(",")

    import torch

    from hardymer.data.synthetic import generate

    torch.set_num_threads(args.threads)
    peak = gemm_peak(args.threads)
    print(f"float32 GEMM peak (2048^2 mm, {args.threads} threads): {peak / 1e9:.1f} GFLOP/s")
    peak_bf16 = None
    if "bf16" in paths:          # 512^2: without bf16 units a 2048^2 product takes minutes
        peak_bf16 = gemm_peak(args.threads, n=512, repeats=3, dtype=torch.bfloat16)
        print(f"bfloat16 GEMM peak (512^2 mm): {peak_bf16 / 1e9:.2f} GFLOP/s; oneDNN bf16 "
              f"kernels: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}")
    sets = {"iemocap4, 16 dialogues": (generate("iemocap4", seed=0), None),
            "utterance-level, 16 utterances": (utterance_level_data(), None),
            "utterance-level, 256 utterances": (utterance_level_data(), 256)}
    rows = []
    for name, (ds, budget) in sets.items():
        fig = {p: step_figures(ds, budget, p, args.steps) for p in paths}
        useful = min(f["flops_per_utt"] for f in fig.values())
        for p, f in fig.items():
            f.update(data=name, path=p, ratio=f["flop_per_s"] / peak,
                     useful_ratio=useful * f["utt_per_s"] / peak)
            rows.append(f)
            print(f"{name:32s} {p:4s}  {f['flops_per_utt'] / 1e6:7.1f} MFLOP/utt  "
                  f"{f['utt_per_s']:7.0f} utt/s  {f['flop_per_s'] / 1e9:6.1f} GFLOP/s = "
                  f"{f['ratio']:.1%} of peak (useful {f['useful_ratio']:.1%})", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threads": args.threads, "machine": platform.machine(),
                                    "gemm_peak_flop_per_s": peak,
                                    "bf16_gemm_peak_flop_per_s": peak_bf16, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
