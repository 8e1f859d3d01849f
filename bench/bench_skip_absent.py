"""MoMKE stage-2 epochs with and without skipping absent modalities (``model.skip_absent``),
and with the cheaper dropout masks and length-grouped attention on top.

Under a fixed condition a modality is absent from every utterance of every batch. The full
computation (``skip_absent=false``, the old default) still projects it, routes it and passes
it through every expert, then multiplies the result by zero. The skipping path does none of
that. Three paths, each kept behind flags:

* ``old``: ``skip_absent=false``, ``dropout_impl=torch`` (``nn.Dropout``);
* ``skip``: ``skip_absent=true`` with ``dropout_impl=torch`` and ``attention_groups=false``
  (attention on one padded (B, S) grid);
* ``new``: today's defaults (also dropout masks from random bits, attention per length group).

This benchmark times one stage-2 (mixing) epoch of each path under each of the six
incomplete conditions, in one process and interleaved (old, skip, new, old, ...) so that drift
of the machine hits all alike. The data are the ``iemocap4`` preset at full dims (a 512 /
t 1024 / v 1024; fold 0, ~4.4k training utterances). Both paths start from the same weights
and see the same batches; after one untimed warm-up batch, the best of ``--repeats`` epochs
counts.

Usage::

    python bench/bench_skip_absent.py                  # 2 CPU threads, about 4 min
    python bench/bench_skip_absent.py --repeats 1 --out bench/results/skip_absent.json
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_momke import train_batches  # noqa: E402  (the same training loop as that bench)


PATHS = {"old": dict(skip_absent=False, dropout_impl="torch"),
         "skip": dict(skip_absent=True, dropout_impl="torch", attention_groups=False),
         "new": {}}


def epoch_seconds(method, data, stage, opt, device, batch_size: int = 16) -> tuple[float, int]:
    import torch
    loader = list(data.train_loader(1, stage.apply_condition, batch_size))
    method.train()
    warm = loader[0].to(device)
    loss, _ = method.stage_loss(warm, stage)
    loss.backward()
    opt.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    n = train_batches(method, loader, stage, opt, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="iemocap4")
    ap.add_argument("--repeats", type=int, default=2, help="timed epochs per (condition, path)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=Path("bench/results/skip_absent.json"))
    args = ap.parse_args()

    import torch

    from hardymer.data.synthetic import generate
    from hardymer.models import create_method
    from hardymer.protocol import INCOMPLETE_CONDITIONS, make_folds, parse_condition
    from hardymer.training.loaders import FoldData
    from hardymer.training.trainer import resolve_device

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    ds = generate(args.preset, seed=0)
    fold = make_folds(ds)[0]
    rows = []
    for cond_name in INCOMPLETE_CONDITIONS:
        data = FoldData(ds, fold, parse_condition(cond_name, ds.modalities), seed=0)
        models = {}
        for path, kw in PATHS.items():
            torch.manual_seed(0)
            m = create_method("momke", ds.dims, ds.n_classes, ds.task, **kw).to(device)
            models[path] = (m, m.configure_optimizer(1e-4, 1e-5))
        stage = {s.name: s for s in models["old"][0].stages([1, 1])}["mixing"]
        best = {path: float("inf") for path in PATHS}
        for _ in range(args.repeats):
            for path in PATHS:  # interleaved: drift hits every path alike
                method, opt = models[path]
                secs, n = epoch_seconds(method, data, stage, opt, device)
                best[path] = min(best[path], secs)
        rows.append({"condition": cond_name, "utterances": n,
                     **{f"{path}_s": best[path] for path in PATHS},
                     "speedup": best["old"] / best["new"]})
        r = rows[-1]
        print(f"{cond_name:3s}  " + "  ".join(f"{path} {best[path]:6.2f} s" for path in PATHS)
              + f"  x{r['speedup']:.2f}  ({n} utterances)", flush=True)
    mean = {path: sum(r[f"{path}_s"] for r in rows) / len(rows) for path in PATHS}
    old, new = mean["old"], mean["new"]
    print("mean stage-2 epoch over the six incomplete conditions: "
          + ", ".join(f"{path} {v:.2f} s" for path, v in mean.items())
          + f"; speed-up old -> new x{old / new:.2f}, skip -> new x{mean['skip'] / new:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": str(device), "threads": args.threads,
                                    "machine": platform.machine(), "preset": args.preset,
                                    "rows": rows, "mean_s": mean, "mean_old_s": old, "mean_new_s": new,
                                    "speedup": old / new}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
