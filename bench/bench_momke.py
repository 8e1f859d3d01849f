"""MoMKE training throughput and peak memory: SDPA attention vs the reference per-head loop.

Measures, on the ``iemocap4`` synthetic preset at full dims (a 512 / t 1024 / v 1024, 151
dialogues, fold 0 = ~4.4k training utterances), utterances per second of stage 1 (unimodal
experts) and stage 2 (experts mixing under a condition) for two attention implementations in the
same run:

* ``sdpa`` — ``torch.nn.functional.scaled_dot_product_attention`` (the default);
* ``loop`` — a straightforward reimplementation of the reference attention: one head at a time,
  explicit ``softmax(q k^T / sqrt(d))``, masked with -inf, NaN rows zeroed.

Each (implementation, stage) runs in its own subprocess so peak memory is its own
(``ru_maxrss`` growth over the process's footprint before training; on CUDA,
``torch.cuda.max_memory_allocated``).

Usage::

    python bench/bench_momke.py                 # 2 epochs per measurement, this machine
    python bench/bench_momke.py --epochs 1 --out bench/results/momke.json
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path


def train_batches(method, batches, stage, opt, device) -> int:
    """One optimizer step per batch of ``stage``; returns the utterances trained on."""
    n = 0
    for batch in batches:
        batch = batch.to(device)
        loss, _ = method.stage_loss(batch, stage)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += batch.n_utterances
    return n


def measure(impl: str, stage_name: str, epochs: int, preset: str, device: str,
            threads: int) -> dict:
    import torch

    from hardymer.data.synthetic import generate
    from hardymer.models import create_method
    from hardymer.protocol import make_folds, parse_condition
    from hardymer.training.loaders import FoldData

    torch.set_num_threads(threads)
    ds = generate(preset, seed=0)
    fold = make_folds(ds)[0]
    data = FoldData(ds, fold, parse_condition("at", ds.modalities), seed=0)
    torch.manual_seed(0)
    method = create_method("momke", ds.dims, ds.n_classes, ds.task, attention=impl).to(device)
    stage = {s.name: s for s in method.stages([1, 1])}[stage_name]
    opt = method.configure_optimizer(1e-4, 1e-5)
    method.train()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    n_utt, t_total = 0, 0.0
    for epoch in range(epochs + 1):  # epoch 0 is a warm-up, not timed
        loader = data.train_loader(epoch, stage.apply_condition, 16)
        t0 = time.perf_counter()
        n = train_batches(method, loader, stage, opt, device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if epoch > 0:
            t_total += time.perf_counter() - t0
            n_utt += n
    out = {"impl": impl, "stage": stage_name, "epochs": epochs, "utterances": n_utt,
           "seconds": t_total, "utt_per_s": n_utt / t_total,
           "seconds_per_epoch": t_total / epochs,
           "peak_rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.startswith("cuda"):
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per measurement")
    ap.add_argument("--preset", default="iemocap4")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--out", type=Path, default=Path("bench/results/momke.json"))
    ap.add_argument("--child", nargs=2, metavar=("IMPL", "STAGE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.device == "auto":
        import torch
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.child:
        print(json.dumps(measure(*args.child, args.epochs, args.preset, args.device,
                                 args.threads)))
        return
    rows = []
    for stage in ("unimodal", "mixing"):
        for impl in ("sdpa", "loop"):
            cmd = [sys.executable, __file__, "--child", impl, stage, "--epochs", str(args.epochs),
                   "--preset", args.preset, "--device", args.device,
                   "--threads", str(args.threads)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{stage:9s} {impl:5s} {r['utt_per_s']:8.1f} utt/s  "
                  f"{r['seconds_per_epoch']:6.2f} s/epoch  peak RSS growth "
                  f"{r['peak_rss_growth_mb']:7.1f} MB" +
                  (f"  CUDA peak {r['cuda_peak_mb']:.0f} MB" if "cuda_peak_mb" in r else ""),
                  flush=True)
    by = {(r["stage"], r["impl"]): r for r in rows}
    ratios = {s: by[(s, "sdpa")]["utt_per_s"] / by[(s, "loop")]["utt_per_s"]
              for s in ("unimodal", "mixing")}
    for s, x in ratios.items():
        print(f"speed-up of sdpa over loop, {s}: {x:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": args.device, "threads": args.threads,
                                    "machine": platform.machine(), "rows": rows,
                                    "ratio_sdpa_over_loop": ratios}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
