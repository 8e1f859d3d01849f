"""How well estimated hardness tracks planted hardness on generated data.

Prepares one fold of a planted-hardness preset (fine-tuning, teacher), computes the curriculum
plan under each of the six incomplete conditions and the full one, and prints per condition the
Spearman correlation of ``h`` with the planted hardness under that condition, of each term with
each planted kind, and the pooled correlation of each sample's mean ``h`` over the incomplete
conditions with its planted hardness.

Usage::

    python bench/hardness_tracking.py                        # default iemocap4 planting
    python bench/hardness_tracking.py --clear                # strength 1, independent scale 3
    python bench/hardness_tracking.py --set model.ind_estimator=infonce
"""
from __future__ import annotations

import argparse
import time

# The "clear" planting: every planted utterance at full strength and the key modality's own
# component twice as large, so that planted hardness is unambiguous in the data.
CLEAR = {"strength_range": (1.0, 1.0), "direct_independent_scale": 3.0}
BUDGET = ["model.hidden=64", "model.depth=2", "model.teacher_epochs=[8,24]", "train.lr=1e-3",
          "train.batch_size=8"]


def hardness_frame(preset="iemocap4", dims=(64, 128, 128), clear=False, overrides=(), seed=0,
                   fold_index=0):
    """(per-utterance table over all conditions, prepare seconds)."""
    import pandas as pd

    from hardymer.data.synthetic import generate
    from hardymer.reports.hardness import plan_table
    from hardymer.protocol import all_fixed_conditions, make_folds
    from hardymer.runs.config import load_run_config
    from hardymer.runs.experiment import prepare_fold
    from hardymer.training.loaders import FoldData

    ds = generate(preset, seed=seed, dims=dims, **(CLEAR if clear else {}))
    cfg = load_run_config("hardymer", ds.family, BUDGET + list(overrides))
    fold = make_folds(ds)[fold_index]
    t0 = time.perf_counter()
    ctx = prepare_fold(cfg, ds, fold, None, progress=False)
    seconds = time.perf_counter() - t0
    frames = []
    for cond in all_fixed_conditions(ds.modalities):
        plan = ctx.plan(FoldData(ctx.dataset, fold, cond, seed=0).train_mask(1), 1, None)
        frames.append(plan_table(plan, ctx.dataset, fold_index, cond.name))
    return pd.concat(frames, ignore_index=True), seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", default="iemocap4")
    ap.add_argument("--dims", default="64,128,128")
    ap.add_argument("--clear", action="store_true", help="Use the clear planting (see CLEAR).")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    from hardymer.reports.tables import to_markdown
    from hardymer.reports.hardness import pooled_spearman, summarize
    df, seconds = hardness_frame(args.preset, tuple(int(x) for x in args.dims.split(",")),
                                 args.clear, args.overrides)
    cols = ["condition", "mean_k_prime", "support_label_agreement",
            "spearman_h_planted_effective", "spearman_hdir_planted_dir",
            "spearman_hind_planted_dir", "spearman_hind_planted_ind",
            "spearman_hdir_planted_ind"]
    print(f"preset {args.preset} dims {args.dims} clear={args.clear} {args.overrides}; "
          f"fold prepared in {seconds:.0f} s\n")
    print(to_markdown(summarize(df)[cols].round(3)))
    incomplete = [c for c in dict.fromkeys(df.condition) if c != "atv"]
    print("pooled over incomplete conditions:",
          {k: round(v, 3) for k, v in pooled_spearman(df, incomplete).items()})


if __name__ == "__main__":
    main()
