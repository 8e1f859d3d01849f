"""Where HARDY-MER's gain comes from: MoMKE, fine-tuned features, the curriculum, the reference
form and its fine-tuning leak, as paired differences with 95 % intervals (issue #14, point 6).

Fifteen forms, one sweep (``hardymer sweep`` underneath, so it resumes and reports the same way):

===================  ==========================================================================
``momke``            MoMKE on the raw features
``momke+ft``         MoMKE on fold-scoped fine-tuned features (HARDY-MER with no retrieval,
                     no L_rec: the same network as MoMKE, reading what HARDY-MER reads)
``momke+ft-leak``    the same, features fine-tuned on the official training split (the leak)
``momke+ft-concat``  MoMKE on [raw, fine-tuned] features (``model.finetune_output=concat``)
``paper``            HARDY-MER as the paper describes it (our default), fold-scoped fine-tuning
``paper-leak``       the same with official-split fine-tuning
``ref``              the reference code's computation (``--reference-compat``) without the leak
``ref-leak``         the reference code's computation, leak included (``hardymer:reference``)
``ref-onestep``      ``ref`` with one optimizer step per batch (``model.view_steps=batch``)
``ref-lr1e-4``       ``ref`` at the reference's student learning rate (train_our.py: 1e-4)
``ref-onestep-mix``  ``ref-onestep`` with MoMKE's cross-expert mixing (``model.mixing=true``)
``ref-onestep-nol2`` ``ref-onestep`` without the text L2 normalisation (``model.text_l2=false``)
``ref-onestep-own``  ``ref-onestep`` with each view trained on the label of the utterance it
                     shows (``model.support_labels=own``)
``ref-onestep-rows`` ``ref-onestep`` without the row mismatch (``model.row_bug=false``)
``ref-onestep-dec``  ``ref-onestep`` with our per-modality decoders (``model.decoder=per-modality``)
===================  ==========================================================================

The last seven take the reference form apart (docs/results.md, "What the reference form's score
is made of"): the per-view steps, the learning rate they meet, the student's fusion, and
then, one at a time, the suspects of the gap that remains under ``at`` and ``tv``. (The
merge-order retrieval cannot be swapped inside the views form: ``model.ranking=combined`` is
refused there.)

Over the six incomplete conditions (those containing ``t`` with ``--text-only``), every fold,
``--seeds``; the report (``OUT/report``, ``paired.md``) gives every pair's mean difference with
a 95 % bootstrap interval. The budget is an option: the papers' (MoMKE 100 + 100, HARDY-MER
25 + 25 with a 100 + 100 teacher) is days on 2 CPU cores, so ``--scale`` shortens every stage
alike and the report's header says which was run.

    python bench/decompose.py --data synth:iemocap4 --out sweeps/decompose --scale 0.1
    python bench/decompose.py --data data/iemocap4-text --text-only --out sweeps/decompose-text
"""
from __future__ import annotations

import argparse
from pathlib import Path

DECOMPOSITION = {
    "momke": ("momke", []),
    "momke+ft": ("hardymer", ["model.retrieval=false", "model.lambda_rec=0"]),
    "momke+ft-leak": ("hardymer", ["model.retrieval=false", "model.lambda_rec=0",
                                   "model.finetune_scope=official-split"]),
    "momke+ft-concat": ("hardymer", ["model.retrieval=false", "model.lambda_rec=0",
                                     "model.finetune_output=concat"]),
    "paper": ("hardymer", []),
    "paper-leak": ("hardymer", ["model.finetune_scope=official-split"]),
    "ref": ("hardymer", ["model.reference_compat=true", "model.finetune_scope=fold"]),
    "ref-leak": ("hardymer", ["model.reference_compat=true"]),
}
_REF = DECOMPOSITION["ref"][1]
_ONESTEP = [*_REF, "model.view_steps=batch"]
REFERENCE_PARTS = {
    "ref-onestep": ("hardymer", _ONESTEP),
    "ref-lr1e-4": ("hardymer", [*_REF, "train.lr=1e-4"]),
    "ref-onestep-mix": ("hardymer", [*_ONESTEP, "model.mixing=true"]),
    "ref-onestep-nol2": ("hardymer", [*_ONESTEP, "model.text_l2=false"]),
    "ref-onestep-own": ("hardymer", [*_ONESTEP, "model.support_labels=own"]),
    "ref-onestep-rows": ("hardymer", [*_ONESTEP, "model.row_bug=false"]),
    "ref-onestep-dec": ("hardymer", [*_ONESTEP, "model.decoder=per-modality"]),
}
FORMS = {**DECOMPOSITION, **REFERENCE_PARTS}
INCOMPLETE = ["a", "t", "v", "at", "av", "tv"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="synth:iemocap4")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--forms", default=",".join(DECOMPOSITION),
                    help="Comma-separated forms from the table above (default: the first eight).")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--folds", default="all")
    ap.add_argument("--conditions", default=",".join(INCOMPLETE))
    ap.add_argument("--text-only", action="store_true",
                    help="Only the conditions that contain t (a real-text set without a/v).")
    ap.add_argument("--protocol", default="val")
    ap.add_argument("--scale", type=float, default=1.0, help="budget.scale for every stage.")
    ap.add_argument("--set", action="append", default=[], help="Extra --set for every form.")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--trust-pickle", action="store_true")
    args = ap.parse_args()

    from hardymer.reports.sweep import write_sweep_report
    from hardymer.runs.sweep import load_spec, run_sweep

    conditions = [c for c in args.conditions.split(",") if not args.text_only or "t" in c]
    methods = [{"name": n, "method": FORMS[n][0], "set": list(FORMS[n][1])}
               for n in args.forms.split(",")]
    sets = list(args.set) + ([f"budget.scale={args.scale}"] if args.scale != 1 else [])
    # load_spec as `hardymer sweep` does: "hardymer:key=v" reaches every form on hardymer
    spec = load_spec(None, data=args.data, methods=methods, conditions=conditions,
                     folds=args.folds, seeds=[int(s) for s in args.seeds.split(",")],
                     protocol=args.protocol, set=sets)
    spec.trust_pickle = args.trust_pickle
    run_sweep(spec, args.out, workers=args.workers)
    rep = write_sweep_report(args.out, args.out / "report", trust_pickle=args.trust_pickle)
    print(rep["text"])


if __name__ == "__main__":
    main()
