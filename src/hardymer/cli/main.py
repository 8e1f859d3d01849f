"""The ``hardymer`` command line. Each command's ``--help`` says what it does and shows an example."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    add_completion=False, no_args_is_help=True, rich_markup_mode=None,
    help="Robust multimodal emotion recognition with missing modalities.\n\n"
         "Data go in as a generic feature folder (see `hardymer synth`), the GCNet reference "
         "layout (IEMOCAP, CMU-MOSI/MOSEI; see `hardymer convert`), or `synth:PRESET` for a "
         "generated data set. Start with `hardymer quickstart`.")

DATA_HELP = ("Data: a generic feature folder, a reference-layout root (needs --trust-pickle), "
             "or synth:PRESET[@SEED] (e.g. synth:tiny, synth:iemocap4@1).")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _open(source: str, trust_pickle: bool = False):
    from ..data import open_data
    from ..data.validate import DataError
    try:
        return open_data(source, allow_pickle=trust_pickle)
    except (DataError, FileNotFoundError, KeyError) as err:
        _fail(str(err))


def _conditions(text: str, dataset):
    from ..data.validate import DataError
    from ..protocol.conditions import all_fixed_conditions, parse_condition
    if text.strip() in ("all", "every", "*"):
        return all_fixed_conditions(dataset.modalities)
    try:
        return [parse_condition(part, dataset.modalities) for part in text.split(",")]
    except DataError as err:
        _fail(str(err))


@app.command("list")
def list_cmd() -> None:
    """List registered methods, synthetic presets and conditions."""
    from ..data.synthetic import list_presets
    from ..models import list_methods
    typer.echo("methods:  " + ", ".join(list_methods()))
    typer.echo("synthetic presets:  " + ", ".join(list_presets()))
    typer.echo("conditions:  a, t, v, at, av, tv, atv (available modalities), all, random:P")


@app.command()
def synth(
    preset: str = typer.Argument("tiny", help="Generator preset (see `hardymer list`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write (generic format)."),
    seed: int = typer.Option(0, help="Generator seed; same seed, same data."),
    overwrite: bool = typer.Option(False, help="Replace an existing folder."),
    set_: list[str] = typer.Option([], "--set", help="Generator field override, e.g. "
                                   "--set direct_fraction=0 (repeatable)."),
) -> None:
    """Write a generated dialogue data set with planted hardness in the generic format.

    Example: hardymer synth iemocap4 --out data/syn-iemocap4 --seed 1
    """
    from ..data.generic import write_generic
    from ..data.synthetic import generate
    overrides = {}
    for item in set_:
        key, _, val = item.partition("=")
        overrides[key] = json.loads(val) if val[:1] in "[{0123456789-.tf" else val
    try:
        ds = generate(preset, seed=seed, **overrides)
        write_generic(ds, out, overwrite=overwrite)
    except (KeyError, TypeError, ValueError, FileExistsError) as err:
        _fail(str(err))
    typer.echo(f"wrote {out}: {ds.summary()}")


@app.command()
def convert(
    src: Path = typer.Argument(..., help="Reference root (label pickle + feature folders) or "
                               "the .pkl file itself."),
    out: Path = typer.Option(..., "--out", "-o", help="Generic folder to write."),
    kind: str = typer.Option("auto", help="iemocap4, iemocap6, mosi, mosei or auto (from the "
                             "pickle's file name)."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow reading the label "
                                      "pickle. Pickle can run arbitrary code: use only for "
                                      "files from a source you trust."),
    missing_ok: bool = typer.Option(False, help="Record absent audio/text .npy files as "
                                    "missing instead of failing."),
    overwrite: bool = typer.Option(False, help="Replace an existing output folder."),
) -> None:
    """Convert the GCNet reference layout (IEMOCAP / CMU-MOSI / MOSEI) to the safe generic format.

    Example: hardymer convert ~/features/IEMOCAP --kind iemocap4 --trust-pickle --out data/iemocap4
    """
    from ..data.reference import convert as do_convert
    from ..data.validate import DataError
    try:
        ds = do_convert(src, out, kind=kind, allow_pickle=trust_pickle, missing_ok=missing_ok,
                        overwrite=overwrite)
    except (DataError, FileExistsError) as err:
        _fail(str(err))
    typer.echo(f"wrote {out}: {ds.summary()}")


@app.command()
def info(data: str = typer.Argument(..., help=DATA_HELP),
         trust_pickle: bool = typer.Option(False, "--trust-pickle")) -> None:
    """Describe a data set: sizes, dims, missingness, folds."""
    from ..protocol.splits import make_folds
    ds = _open(data, trust_pickle)
    typer.echo(ds.summary())
    for f in make_folds(ds):
        typer.echo(f"  fold {f.index}: {f.name}: train {len(f.train)} / val {len(f.val)} / "
                   f"test {len(f.test)} sequences")


@app.command()
def train(
    data: str = typer.Option(..., "--data", "-d", help=DATA_HELP),
    method: str = typer.Option("momke", "--method", "-m", help="Registered method "
                               "(`hardymer list`)."),
    condition: str = typer.Option("atv", "--condition", "-c", help="Available modalities: a, t, "
                                  "v, at, av, tv, atv; random:P (each modality dropped with "
                                  "probability P, one kept); comma-separated list or 'all'."),
    fold: Optional[int] = typer.Option(None, "--fold", help="Run one fold (0-based; IEMOCAP "
                                       "fold k tests session k+1)."),
    folds: str = typer.Option("all", "--folds", help="'all' (default; the papers average "
                              "folds) or a comma-separated list."),
    protocol: str = typer.Option("val", "--protocol", help="Model selection: 'val' (best "
                                 "validation epoch, default) or 'paper' (best epoch on the "
                                 "test split, the MoMKE/HARDY-MER papers' rule)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (resumable: re-run the "
                             "same command to continue)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML with model:/train: "
                                          "sections, merged over the method's preset."),
    set_: list[str] = typer.Option([], "--set", help="Override, e.g. --set train.epochs=[10,10]"
                                   " --set model.router=false (repeatable)."),
    seed: Optional[int] = typer.Option(None, help="Training seed (default: the preset's)."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow reading a reference"
                                      " label pickle (runs code: trusted files only)."),
    ablation: list[str] = typer.Option([], "--ablation", help="HARDY-MER ablation (repeatable): "
                                       "no-h-dir, no-h-ind, no-h (fixed k), no-retrieval, "
                                       "no-finetune."),
    reference_compat: bool = typer.Option(False, "--reference-compat", help="HARDY-MER: the "
                                          "reference code's choices (sigmoid fusion, per-batch "
                                          "min-max, floor(h k)+1 supports, a-v-t merge order, "
                                          "query labels for supports)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Train and evaluate a method over folds × conditions; prints and writes the table.

    Hyper-parameters come from the method's preset for the data set's family (the papers'
    values), then --config, then --set. MoMKE's stage 1 does not depend on the condition and
    is trained once per fold, then shared.

    \b
    Examples:
      hardymer train --data synth:tiny --method momke --condition a,at --fold 0 --out runs/t
      hardymer train --data data/iemocap4 --method momke --condition all --protocol paper \\
          --out runs/paper
      hardymer train --data synth:demo --condition at --set model.router=false --out runs/r
      hardymer train --data synth:demo --method hardymer --condition all --fold 0 --out runs/h
      hardymer train --data synth:demo --method hardymer --ablation no-h-dir --out runs/h1
    """
    from ..models.hardymer import ABLATIONS
    from ..training.config import load_run_config
    from ..training.experiment import run_experiment
    ds = _open(data, trust_pickle)
    overrides = list(set_) + [f"train.protocol={protocol}"]
    for name in ablation:
        if name not in ABLATIONS:
            _fail(f"unknown ablation {name!r}; expected one of {', '.join(ABLATIONS)}")
        if method != "hardymer":
            _fail("--ablation applies to --method hardymer")
        overrides.append(ABLATIONS[name])
    if reference_compat:
        if method != "hardymer":
            _fail("--reference-compat applies to --method hardymer")
        overrides.append("model.reference_compat=true")
    if seed is not None:
        overrides.append(f"train.seed={seed}")
    try:
        cfg = load_run_config(method, ds.family, overrides, str(config) if config else None)
    except (KeyError, ValueError) as err:
        _fail(str(err))
    conds = _conditions(condition, ds)
    fold_ids = [fold] if fold is not None else (
        None if folds == "all" else [int(x) for x in folds.split(",")])
    typer.echo(f"{ds.summary()}\nmethod {method}, protocol {cfg.train.protocol}, "
               f"conditions {', '.join(c.name for c in conds)}, out {out}")
    t0 = time.perf_counter()
    try:
        records = run_experiment(cfg, ds, conds, fold_ids, out, data_source=_source_id(data),
                                 progress=progress)
    except ValueError as err:
        _fail(str(err))
    _report(out, records, ds.task, f"{method} on {ds.name} ({cfg.train.protocol} selection)")
    typer.echo(f"done in {time.perf_counter() - t0:.0f} s; results in {out}")


def _source_id(data: str) -> str:
    return data if data.startswith("synth:") else str(Path(data).resolve())


def _report(out: Path, records, task: str, title: str) -> None:
    from ..evaluation.report import write_report
    from ..training.experiment import read_records
    all_records = read_records(out)
    protocol = ", ".join(sorted({r["protocol"] for r in all_records}))
    header = (f"Selection protocol: {protocol}. Folds: "
              f"{', '.join(str(f) for f in sorted({r['fold'] for r in all_records}))}. "
              f"Seed(s): {', '.join(str(s) for s in sorted({r['seed'] for r in all_records}))}. "
              "Cells: test-split mean ± std over folds "
              + ("(percent).\n" if task == "classification"
                 else "(ACC and F1 as fractions, MAE in label units, Corr).\n"))
    wide, paths = write_report(all_records, task, out, title=title, header=header)
    from ..evaluation.report import to_markdown
    typer.echo("\n" + header + to_markdown(wide))
    typer.echo(f"table: {paths['md']}, {paths['csv']}; plot: {paths['png']}")


@app.command()
def evaluate(
    run: Path = typer.Argument(..., help="A run folder made by `hardymer train`."),
    condition: Optional[str] = typer.Option(None, "--condition", "-c", help="Evaluate under "
                                            "this condition instead of each model's own."),
    trained_on: Optional[str] = typer.Option(None, "--trained-on", help="Which trained "
                                             "condition's models to use (needed with "
                                             "--condition when the run trained several)."),
    split: str = typer.Option("test", help="test, val or train."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: WA, UA, F1 (or ACC, F1, "
                                 "MAE, Corr) as the mean over folds, plus per-fold values."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle"),
) -> None:
    """Re-evaluate a run's selected checkpoints (optionally under another condition).

    Example: hardymer evaluate runs/t --condition t --trained-on at --json
    """
    from ..evaluation.evaluate import EvaluationError, evaluate_run
    try:
        result = evaluate_run(run, condition=condition, trained_on=trained_on, split=split,
                              opener=lambda src: _open(src, trust_pickle))
    except EvaluationError as err:
        _fail(str(err))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    for cell in result["per_fold"]:
        metrics = "  ".join(f"{k} {v:.4f}" for k, v in cell["metrics"].items())
        typer.echo(f"fold {cell['fold']} trained on {cell['trained_on']}, evaluated on "
                   f"{cell['condition']}: {metrics}")
    typer.echo("mean: " + "  ".join(f"{k} {result[k]:.4f}" for k in result["metrics"]))


@app.command()
def hardness(
    run: Path = typer.Argument(..., help="A run folder made by `hardymer train --method "
                               "hardymer`."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the table and plots."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle"),
) -> None:
    """Which training samples are hard, why, and what was retrieved for them.

    Writes OUT/hardness.csv (per training utterance and condition: h_dir, h_ind, h, k_prime,
    support ids, distances and labels, plus planted_* ground truth for generated data),
    OUT/summary.{csv,md} (per condition: mean h and k', label agreement of the supports,
    Spearman correlations with planted hardness) and plots of the hardness distribution per
    condition and class, and of hardness vs planted hardness.

    Example: hardymer hardness runs/h --out runs/h/hardness
    """
    from ..hardness.inspect import InspectionError, inspect_run
    try:
        res = inspect_run(run, out, opener=lambda src: _open(src, trust_pickle))
    except InspectionError as err:
        _fail(str(err))
    typer.echo(res["text"])
    typer.echo("wrote " + ", ".join(str(p) for p in res["paths"].values()))


@app.command()
def quickstart(
    out: Path = typer.Option(Path("runs/quickstart"), "--out", "-o", help="Run folder."),
    preset: str = typer.Option("demo", help="Synthetic preset to generate."),
    epochs: int = typer.Option(10, help="Epochs per stage (the papers use 100 + 100 for MoMKE "
                               "and 25 + 25 for HARDY-MER; this is a short demonstration "
                               "budget)."),
    fold: int = typer.Option(0, help="Fold to run (0 = test on session 1)."),
    zero_fill: bool = typer.Option(True, help="Also train the zero-fill floor."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """The README's main job: HARDY-MER vs MoMKE (and the zero-fill floor) on generated data.

    Generates an IEMOCAP-shaped data set with planted hardness (no download), writes it in
    the generic format under OUT/data, trains each method on one fold under all seven
    conditions with validation selection, prints the per-condition WA/UA table, writes it as
    CSV/Markdown with a plot, and writes HARDY-MER's hardness table and plots under
    OUT/hardness.
    """
    from ..data.generic import write_generic
    from ..data import open_data
    from ..data.synthetic import generate
    from ..hardness.inspect import inspect_run
    from ..training.config import load_run_config
    from ..training.experiment import run_experiment
    from ..protocol.conditions import all_fixed_conditions
    t0 = time.perf_counter()
    data_dir = out / "data"
    if not (data_dir / "dataset.json").is_file():
        write_generic(generate(preset, seed=0), data_dir, overwrite=True)
    ds = open_data(str(data_dir))
    typer.echo(ds.summary())
    conds = all_fixed_conditions(ds.modalities)
    common = ["train.lr=1e-3", "train.batch_size=8"]
    plan = [("momke", [f"train.epochs={[epochs, epochs]}"]),
            ("hardymer", [f"train.epochs={[epochs, epochs]}",
                          f"model.teacher_epochs={[epochs, epochs]}"])]
    if zero_fill:
        plan.insert(0, ("zero-fill", [f"train.epochs={[2 * epochs]}"]))
    records = []
    for method, extra in plan:
        cfg = load_run_config(method, ds.family, extra + common)
        typer.echo(f"training {method} ({', '.join(extra)}, lr 1e-3) on fold {fold}, "
                   f"conditions {', '.join(c.name for c in conds)}")
        records += run_experiment(cfg, ds, conds, [fold], out / method,
                                  data_source=str(data_dir.resolve()), progress=progress)
    from ..evaluation.report import to_markdown, write_report
    header = (f"Synthetic preset {preset!r} (seed 0), fold {fold}, validation selection, "
              f"{epochs} epochs per stage (lr 1e-3, batch 8: a demonstration budget, not the "
              "papers'). Cells: test WA/UA/F1 in percent.\n")
    wide, paths = write_report(records, ds.task, out, title="hardymer quickstart", header=header)
    typer.echo("\n" + header + to_markdown(wide))
    hard = inspect_run(out / "hardymer", out / "hardness", opener=lambda src: ds)
    typer.echo("HARDY-MER hardness per condition:\n" + hard["text"])
    typer.echo(f"table: {paths['md']}, {paths['csv']}; plot: {paths['png']}; hardness: "
               f"{', '.join(str(p) for p in hard['paths'].values())}; "
               f"{time.perf_counter() - t0:.0f} s")


def main() -> None:  # pragma: no cover
    app(prog_name="hardymer")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
