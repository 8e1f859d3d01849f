"""MoMKE on utterance-level data: old and new training paths side by side (#18 point 3).

Utterance-level data — every utterance its own sequence, as in most users' own corpora — used
to train at a few hundred utterances per second on 2 cores: a batch of 16 one-utterance
sequences is 16 utterances, and per batch the work is fixed costs. The data here: 3,000
generated utterances, one per sequence, dims a 64 / t 128 / v 32 (the ``tiny`` preset's
generator with ``n_sequences=3000, length_range=(1, 1)``), fold 0, condition ``at``.

Paths, each a whole ``Trainer.fit`` into a run folder (checkpoints, evaluation and logs count):

* ``old`` — the previous defaults, kept behind flags: ``train.fused_optimizer=false`` (torch's
  per-parameter Adam loop), ``train.checkpoint_every=1`` (a full checkpoint with optimizer
  state every epoch), ``model.skip_absent=false`` (absent modalities through every expert),
  ``model.dropout_impl=torch`` (``nn.Dropout``'s per-element Bernoulli masks) and the one-key
  attention shortcut off;
* ``new`` — today's defaults, same batches (16 sequences): the same computation up to float
  rounding (fused Adam, the absent modality skipped, q/k skipped where a sequence has one key,
  checkpoints on the auto cadence);
* ``new+budget`` — also ``train.batch_utterances=N``: batches of N utterances. This one
  changes the optimisation (fewer, larger steps); its validation WA after the same epochs is
  printed beside the others so the trade is visible.

Paths are interleaved per repeat (old, new, budget, old, ...) so that drift of the machine hits
all alike; the best repeat counts. Run it alone on the machine.

Usage::

    python bench/bench_utterance.py                       # about 3 min on 2 cores
    python bench/bench_utterance.py --repeats 1 --budget 256 --out bench/results/utterance.json
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path


def utterance_level_data(n: int = 3000):
    from hardymer.data.synthetic import generate
    return generate("tiny", seed=0, n_sequences=n, length_range=(1, 1), mean_length=1.0,
                    speakers_per_sequence=1, dims=(64, 128, 32))


# The defaults before the #18 speed changes (also read by bench_flops.py and full_table.py).
OLD = ["train.fused_optimizer=false", "train.checkpoint_every=1", "model.skip_absent=false",
       "model.dropout_impl=torch"]


def set_one_key_shortcut(method, on: bool) -> None:
    """Turn the attention's one-key shortcut on (default) or off (the old path)."""
    from hardymer.models.attention import MaskedSelfAttention
    for mod in method.modules():
        if isinstance(mod, MaskedSelfAttention):
            mod.one_key_shortcut = on


def fit_once(ds, fold, condition, sets: list[str], shortcut: bool, device: str) -> dict:
    from hardymer.runs.config import load_run_config
    from hardymer.runs.experiment import build_method
    from hardymer.training.loaders import FoldData
    from hardymer.training.trainer import Trainer

    cfg = load_run_config("momke", ds.family, sets + [f"train.device={device}"])
    data = FoldData(ds, fold, condition, seed=cfg.train.seed)
    method = build_method(cfg, ds)
    set_one_key_shortcut(method, shortcut)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        res = Trainer(cfg.train, Path(out), progress=False).fit(method, data)
        wall = time.perf_counter() - t0
    stage = {}
    for row in res.history:
        s = stage.setdefault(row["stage"], {"seconds": 0.0, "utterances": 0.0})
        s["seconds"] += row["train_seconds"]
        s["utterances"] += row["train_utt_per_s"] * row["train_seconds"]
    trained = sum(s["utterances"] for s in stage.values())
    return {"wall_s": wall, "fit_utt_per_s": trained / wall,
            **{f"{k}_utt_per_s": v["utterances"] / v["seconds"] for k, v in stage.items()},
            "val_WA": res.val["WA"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--utterances", type=int, default=3000)
    ap.add_argument("--condition", default="at")
    ap.add_argument("--epochs", default="2,2", help="stage 1, stage 2 epochs per fit")
    ap.add_argument("--budget", type=int, default=256, help="train.batch_utterances of the "
                    "third path")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=Path("bench/results/utterance.json"))
    args = ap.parse_args()

    import torch

    from hardymer.protocol import make_folds, parse_condition

    torch.set_num_threads(args.threads)
    ds = utterance_level_data(args.utterances)
    fold = make_folds(ds)[0]
    cond = parse_condition(args.condition, ds.modalities)
    epochs = [int(e) for e in args.epochs.split(",")]
    base = [f"train.epochs={epochs}"]
    paths = {"old": (base + OLD, False), "new": (base, True),
             "new+budget": (base + [f"train.batch_utterances={args.budget}"], True)}
    print(ds.summary())
    best: dict[str, dict] = {}
    for rep in range(args.repeats):
        for name, (sets, shortcut) in paths.items():   # interleaved: drift hits all alike
            r = fit_once(ds, fold, cond, sets, shortcut, args.device)
            print(f"repeat {rep}  {name:10s}  fit {r['wall_s']:6.1f} s  "
                  f"{r['fit_utt_per_s']:6.0f} utt/s overall  stage 1 "
                  f"{r.get('unimodal_utt_per_s', 0):6.0f}  stage 2 "
                  f"{r.get('mixing_utt_per_s', 0):6.0f} utt/s  val WA {r['val_WA']:.2f}",
                  flush=True)
            if name not in best or r["wall_s"] < best[name]["wall_s"]:
                best[name] = r
    old = best["old"]["fit_utt_per_s"]
    for name, r in best.items():
        r["speedup_vs_old"] = r["fit_utt_per_s"] / old
        print(f"{name:10s}  {r['fit_utt_per_s']:6.0f} utt/s  x{r['speedup_vs_old']:.2f} vs old")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "device": args.device, "threads": args.threads, "machine": platform.machine(),
        "utterances": args.utterances, "condition": args.condition, "epochs": epochs,
        "budget": args.budget, "paths": best}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
