"""The ``hardymer`` command line. Each command's ``--help`` says what it does and shows an example.

Commands import the layers they use when they run, so ``hardymer --help`` and argument errors
answer without loading torch and every layer below (the layer rule still holds for these
imports: ``lint-imports`` checks function-level imports too).
"""
from __future__ import annotations

import json
import logging
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


PICKLE_HELP = ("Allow reading a reference label pickle (pickle runs code: trusted files "
               "only). Only this flag allows it, never a config file.")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.callback()
def _setup() -> None:
    """Data warnings (what loading left out) print as one line each, not as Python warnings."""
    import warnings
    previous = warnings.showwarning
    if getattr(previous, "hardymer", False):
        return

    def show(message, category, filename, lineno, file=None, line=None):
        from ..data.validate import DataWarning
        if issubclass(category, DataWarning) or category.__module__.startswith("hardymer"):
            typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)
        else:
            previous(message, category, filename, lineno, file, line)
    show.hardymer = True
    warnings.showwarning = show


def _open(source: str, trust_pickle: bool = False, mmap: bool = True):
    """The data set; a generic folder's features through read-only memory maps (pages are
    read as batches need them and shared between processes; ``mmap=False`` loads them)."""
    from ..data import open_data
    from ..data.validate import DataError
    try:
        return open_data(source, allow_pickle=trust_pickle, mmap=mmap)
    except (DataError, FileNotFoundError, KeyError) as err:
        _fail(str(err))


FOLDS_SCHEME_HELP = ("How folds are made: auto (default: session when every utterance has "
                     "one, else split when every utterance has one, else stratified 5-fold), "
                     "session (leave one session out), split (the split column) or kfold.")
LOG_HELP = ("Training curves: 'tensorboard' writes per-epoch losses, train/val metrics, learning "
            "rate and throughput into every trainer folder; watch them with `tensorboard "
            "--logdir OUT`. Needs the tracking extra (pip install -e \".[tracking]\"). Can be "
            "switched on when resuming; changes no result.")


def _fold_ids(text: str) -> list[int] | None:
    """``--folds``: 'all' or comma-separated fold ids."""
    if text.strip() == "all":
        return None
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        _fail(f"--folds {text!r}: expected 'all' or comma-separated fold ids such as 0,1,2")


def _check_out(out: Path) -> None:
    """No file in the way of ``--out``: said before the data are read."""
    from ..fileio import check_folder_path
    try:
        check_folder_path(out)
    except ValueError as err:
        _fail(str(err))


def _conditions(text: str, dataset):
    from .. import api
    from ..data.validate import DataError
    try:
        return api.conditions_of(text, dataset.modalities)
    except DataError as err:
        _fail(str(err))


@app.command("list")
def list_cmd() -> None:
    """List registered methods, synthetic presets and conditions."""
    from ..data.synthetic import list_presets
    from ..models import METHODS, list_methods
    typer.echo("methods:  " + ", ".join(list_methods()))
    for name, cls in METHODS:
        if cls.ablations:
            typer.echo(f"{name} ablations (--ablation NAME, or {name}:NAME in sweeps):  "
                       + ", ".join(cls.ablations))
    typer.echo("synthetic presets:  " + ", ".join(list_presets()))
    typer.echo("conditions:  a, t, v, at, av, tv, atv (available modalities), all, random:P")
    from ..features.extractors import MODALITIES, list_extractors
    for m, name in MODALITIES.items():
        typer.echo(f"{name} extractors:  " + ", ".join(
            f"{n} ({cls.__doc__.splitlines()[0].strip()})"
            for n, cls in list_extractors(m).items()))


@app.command()
def synth(
    preset: str = typer.Argument("tiny", help="Generator preset (see `hardymer list`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write (generic format)."),
    seed: int = typer.Option(0, help="Generator seed; same seed, same data."),
    overwrite: bool = typer.Option(False, help="Replace an existing folder."),
    set_: list[str] = typer.Option([], "--set", help="Generator field override, e.g. "
                                   "--set direct_fraction=0 --set dims=[8,16,16], or "
                                   "name=NAME for the data set's name (repeatable)."),
) -> None:
    """Write a generated dialogue data set with planted hardness in the generic format.

    Example: hardymer synth iemocap4 --out data/syn-iemocap4 --seed 1
    """
    from dataclasses import replace

    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from ..data.generic import write_generic
    from ..data.synthetic import generate
    try:  # values parse as in `train --set` (YAML: 0.3, true, [1,2], a string)
        overrides = OmegaConf.to_container(OmegaConf.from_dotlist(list(set_)))
    except OmegaConfBaseException as err:
        _fail(f"--set: {err}")
    name = overrides.pop("name", None)
    try:
        ds = generate(preset, seed=seed, **overrides)
        if name is not None:
            ds = replace(ds, name=str(name))
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
    text: str = typer.Option("", "--text", help="Text from the pickle's transcripts instead of "
                             "the text feature folder, embedded by this extractor (e.g. "
                             "minilm, the packaged all-MiniLM-L6-v2); audio/video come from "
                             "their folders when present and are left out otherwise."),
) -> None:
    """Convert the GCNet reference layout (IEMOCAP / CMU-MOSI / MOSEI) to the safe generic format.

    Example: hardymer convert ~/features/IEMOCAP --kind iemocap4 --trust-pickle --out data/iemocap4

    Real text from your own pickle: hardymer convert ~/features/IEMOCAP --kind iemocap4
    --trust-pickle --text minilm --out data/iemocap4-text
    """
    from ..data.reference import convert as do_convert
    from ..data.validate import DataError
    try:
        if text:
            from ..features.extractors import ExtractorError
            from ..features.transcripts import convert_with_text
            try:
                ds = convert_with_text(src, out, kind=kind, allow_pickle=trust_pickle,
                                       text=text, missing_ok=missing_ok, overwrite=overwrite)
            except ExtractorError as err:
                _fail(str(err))
        else:
            ds = do_convert(src, out, kind=kind, allow_pickle=trust_pickle,
                            missing_ok=missing_ok, overwrite=overwrite)
    except (DataError, FileExistsError) as err:
        _fail(str(err))
    typer.echo(f"wrote {out}: {ds.summary()}")


@app.command()
def info(data: str = typer.Argument(..., help=DATA_HELP),
         trust_pickle: bool = typer.Option(False, "--trust-pickle", help=PICKLE_HELP),
         folds_scheme: str = typer.Option("auto", "--folds-scheme", help=FOLDS_SCHEME_HELP)
         ) -> None:
    """Describe a data set: sizes, dims, missingness, folds."""
    from ..data.validate import DataError
    from ..protocol.splits import make_folds
    ds = _open(data, trust_pickle)
    typer.echo(ds.summary())
    try:
        folds = make_folds(ds, scheme=folds_scheme)
    except (DataError, ValueError) as err:
        _fail(str(err))
    typer.echo(f"folds ({folds[0].scheme}):")
    for f in folds:
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
    protocol: Optional[str] = typer.Option(None, "--protocol", help="Model selection: 'val' "
                                           "(best validation epoch) or 'paper' (best epoch on "
                                           "the test split, the MoMKE/HARDY-MER papers' rule) "
                                           "[default: the preset's train.protocol, val]."),
    folds_scheme: Optional[str] = typer.Option(None, "--folds-scheme", help=FOLDS_SCHEME_HELP
                                               + " Same as --set train.folds_scheme=…"),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (resumable: re-run the "
                             "same command to continue; one command at a time: a second "
                             "waits)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML with model:/train: "
                                          "sections, merged over the method's preset."),
    set_: list[str] = typer.Option([], "--set", help="Override, e.g. --set train.epochs=[10,10]"
                                   " --set model.router=false (repeatable); --set "
                                   "budget.scale=0.1 shortens every stage, hidden ones too "
                                   "(a smoke test)."),
    seed: Optional[int] = typer.Option(None, help="Training seed (default: the preset's)."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow reading a reference"
                                      " label pickle (runs code: trusted files only)."),
    ablation: list[str] = typer.Option([], "--ablation", help="An ablation of the method "
                                       "(repeatable; `hardymer list` shows each method's), "
                                       "e.g. HARDY-MER's no-h-dir, no-h-ind, no-h (fixed k), "
                                       "no-retrieval, no-finetune."),
    reference_compat: bool = typer.Option(False, "--reference-compat", help="HARDY-MER: the "
                                          "reference code's choices (sigmoid fusion, per-batch "
                                          "min-max, floor(h k)+1 supports, a-v-t merge order, "
                                          "query labels for supports)."),
    mmap: bool = typer.Option(True, help="Read a generic folder's features through memory "
                              "maps (default: memory holds what batches touch, and the kernel "
                              "may drop it); --no-mmap loads them whole."),
    log: list[str] = typer.Option([], "--log", help=LOG_HELP),
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
    from .. import api
    from ..protocol.splits import make_folds
    from ..runs.experiment import check_run, checked_fold_ids, schedule_text
    from ..training import tracking
    from ..training.distributed import launched
    fold_ids = [fold] if fold is not None else _fold_ids(folds)
    _check_out(out)
    ds = _open(data, trust_pickle, mmap)
    overrides = list(set_) + ([f"train.folds_scheme={folds_scheme}"] if folds_scheme else []) \
        + tracking.override(log)
    try:
        cfg = api.run_config(method, ds.family, overrides, config, protocol=protocol,
                             seed=seed, ablations=ablation,
                             switches=["reference-compat"] if reference_compat else [])
        check_run(cfg, ds, out, api.source_id(data))
        all_folds = make_folds(ds, val_fraction=cfg.train.val_fraction,
                               seed=cfg.train.split_seed, scheme=cfg.train.folds_scheme)
        n_folds = len(checked_fold_ids(all_folds, fold_ids))
    except (KeyError, ValueError) as err:
        _fail(str(err))
    conds = _conditions(condition, ds)
    # Under torchrun every process runs this command; rank 0 alone speaks and writes.
    main = launched()[0] == 0
    echo = typer.echo if main else (lambda *a, **k: None)
    echo(f"{ds.summary()}\nmethod {method}, protocol {cfg.train.protocol}, folds "
               f"{all_folds[0].scheme} ({', '.join(f.name for f in all_folds)}), conditions "
               f"{', '.join(c.name for c in conds)}, out {out}")
    echo(schedule_text(cfg, ds, n_folds, len(conds))
         + "\n  (an estimate of each fit's time follows its first epoch)")
    if not progress:  # the estimate then comes as a log line instead of beside the bar
        logging.basicConfig(format="%(message)s")
        logging.getLogger("hardymer").setLevel(logging.INFO)
    t0 = time.perf_counter()
    try:
        records = api.train(ds, method, conds, folds=fold_ids, out=out,
                            config=cfg, data_source=api.source_id(data), progress=progress)
    except ValueError as err:
        _fail(str(err))
    if main:
        _report(out, records, ds.task, f"{method} on {ds.name} ({cfg.train.protocol} selection)")
    echo(f"done in {time.perf_counter() - t0:.0f} s; results in {out}")


def _report(out: Path, records, task: str, title: str) -> None:
    from ..reports.sweep import data_notes, finetune_scopes, fold_schemes
    from ..reports.tables import to_markdown, write_report
    from ..runs.layout import Run
    run = Run(out)
    all_records = run.records()
    protocol = ", ".join(sorted({r["protocol"] for r in all_records}))
    header = (f"Selection protocol: {protocol}{finetune_scopes(all_records)}. Folds{fold_schemes(all_records)}: "
              f"{', '.join(str(f) for f in sorted({r['fold'] for r in all_records}))}"
              f"{data_notes(all_records)}. "
              f"Seed(s): {', '.join(str(s) for s in sorted({r['seed'] for r in all_records}))}. "
              "Cells: test-split mean ± std over folds "
              + ("(percent).\n" if task == "classification"
                 else "(ACC and F1 as fractions, MAE in label units, Corr).\n"))
    wide, paths = write_report(all_records, task, run.table_paths(), title=title,
                               header=header)
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
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help=PICKLE_HELP),
) -> None:
    """Re-evaluate a run's selected checkpoints (optionally under another condition).

    Example: hardymer evaluate runs/t --condition t --trained-on at --json
    """
    from ..runs.evaluate import EvaluationError, evaluate_run
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
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help=PICKLE_HELP),
    html: bool = typer.Option(False, "--html", help="Also write OUT/hardness.html: the summary, "
                              "the plots and the hardness explorer (per condition the 20 "
                              "hardest and 20 easiest utterances first, filter, sort, click a "
                              "row for its supports) on one self-contained page."),
) -> None:
    """Which training samples are hard, why, and what was retrieved for them.

    Writes OUT/hardness.csv (per training utterance and condition: h_dir, h_ind, h, k_prime,
    support ids, distances and labels, plus planted_* ground truth for generated data),
    OUT/summary.{csv,md} (per condition: mean h and k', label agreement of the supports,
    Spearman correlations with planted hardness) and plots of the hardness distribution per
    condition and class, and of hardness vs planted hardness. Data made by `hardymer extract`
    add each utterance's transcript and media paths.

    Example: hardymer hardness runs/h --out runs/h/hardness --html
    """
    from ..reports.hardness import InspectionError, inspect_run
    try:
        res = inspect_run(run, out, opener=lambda src: _open(src, trust_pickle), html=html)
    except InspectionError as err:
        _fail(str(err))
    typer.echo(res["text"])
    typer.echo("wrote " + ", ".join(str(p) for p in res["paths"].values()))


@app.command("export")
def export_cmd(
    run: Path = typer.Argument(..., help="A run folder made by `hardymer train` (or a sweep's "
                               "runs/<method>/seed<k>/)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write (new, or an earlier "
                             "export with --overwrite)."),
    fold: Optional[int] = typer.Option(None, "--fold", help="Which fold's models [default: "
                                       "the run's first fold]."),
    overwrite: bool = typer.Option(False, help="Replace an earlier export in OUT."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help=PICKLE_HELP),
) -> None:
    """One fold of a trained run as a shareable folder: weights, config, data provenance and a
    model card.

    OUT holds MODEL_CARD.md (Hugging Face layout: model details, training data and whether
    generated, protocol and selection rule, per-condition metrics with the seed, intended use,
    limitations), the selected weights of every finished condition (safetensors, no optimizer
    state), run.json, the standardisation statistics, the fold's training utterances as the
    neighbour database (with the extractors' provenance) and, for HARDY-MER, the fine-tuning
    networks, teacher and curriculum plans that prediction uses for hardness. Nothing in OUT
    points back to the run or its data: `hardymer predict OUT ...` and `hardymer.load(OUT)`
    answer from it alone.

    Example: hardymer export runs/mine --fold 0 --out models/mine
    """
    from .. import api
    from ..data.validate import DataError
    from ..runs.export import ExportError
    from ..runs.layout import Run
    try:
        fold = Run.open(run).folds[0] if fold is None else fold
        res = api.export(run, fold, out, overwrite=overwrite, trust_pickle=trust_pickle)
    except (ExportError, DataError, FileNotFoundError, FileExistsError) as err:
        _fail(str(err))
    typer.echo(f"wrote {res['path']}: fold {fold}, conditions {', '.join(res['conditions'])}, "
               f"{res['rows']} training utterances as neighbours; model card {res['card']}")
    if res["skipped"]:
        typer.secho(f"warning: not exported (unfinished): {', '.join(res['skipped'])}",
                    fg=typer.colors.YELLOW, err=True)


@app.command()
def sweep(
    data: Optional[str] = typer.Option(None, "--data", "-d", help=DATA_HELP),
    methods: Optional[str] = typer.Option(None, "--methods", "-m", help="Comma-separated "
                                          "methods; NAME:ABLATION for a HARDY-MER ablation "
                                          "(hardymer:no-h-dir)."),
    conditions: Optional[str] = typer.Option(None, "--conditions", "-c", help="Comma-separated "
                                             "conditions (a, at, random:0.3, …) or 'all' "
                                             "(the seven fixed ones)."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated training seeds "
                                        "[default: 0]."),
    folds: Optional[str] = typer.Option(None, "--folds", help="'all' [default] or a "
                                        "comma-separated list of fold ids."),
    protocol: Optional[str] = typer.Option(None, "--protocol", help="'val' [default] or "
                                           "'paper' (best test epoch, the papers' rule)."),
    folds_scheme: Optional[str] = typer.Option(None, "--folds-scheme", help=FOLDS_SCHEME_HELP
                                               + " Same as --set train.folds_scheme=…"),
    out: Path = typer.Option(..., "--out", "-o", help="Sweep folder (resumable; one sweep "
                             "command at a time: a second waits)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML grid: data, methods "
                                          "(names or {name, method, set}), conditions, seeds, "
                                          "folds, protocol, set; command-line values win."),
    set_: list[str] = typer.Option([], "--set", help="Override for every method, e.g. --set "
                                   "train.lr=1e-3; for one: --set zero-fill:train.epochs=[10]; "
                                   "a base method's name reaches all its variants (--set "
                                   "hardymer:model.k=5 sets hardymer:no-h too); --set "
                                   "budget.scale=0.1 shortens every stage (repeatable)."),
    workers: int = typer.Option(1, "--workers", "-j", help="Parallel processes (each gets "
                                "cores/workers torch threads)."),
    backend: str = typer.Option("local", "--backend", help="'local' (this machine: --workers "
                                "processes) or 'ray' (Ray tasks: a local Ray, or the cluster "
                                "at --address; pip install -e \".[cluster]\"; docs/scale.md)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join, e.g. "
                                          "auto or HEAD:6379 (--backend ray; default: start a "
                                          "local Ray)."),
    cpus_per_cell: float = typer.Option(1.0, "--cpus-per-cell", help="CPUs each Ray task asks "
                                        "for, and its torch threads (a task trains one "
                                        "variant × seed × fold: all its conditions)."),
    gpus_per_cell: float = typer.Option(0.0, "--gpus-per-cell", help="GPUs each Ray task asks "
                                        "for (fractions share a GPU)."),
    report: bool = typer.Option(True, help="Write the report into OUT/report when done."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help=PICKLE_HELP),
    log: list[str] = typer.Option([], "--log", help=LOG_HELP),
    progress: bool = typer.Option(True, help="Show the progress bar (cells, with an ETA)."),
) -> None:
    """Run a grid: methods × conditions × folds × seeds, into one results store.

    Every finished cell is a row of OUT/results.sqlite (config, metrics of the selected model,
    selection protocol, seed, fold, timings, library versions). Killed? Re-run the same
    command: finished cells are skipped and interrupted ones resume from their checkpoint.

    \b
    Examples:
      hardymer sweep --data synth:tiny --methods momke,zero-fill --conditions a,at,random:0.3 \\
          --seeds 0,1 --folds 0 --set momke:train.epochs=[5,5] \\
          --set zero-fill:train.epochs=[10] --out sweeps/s1
      hardymer sweep --data data/iemocap4 --methods momke,hardymer,hardymer:no-h \\
          --conditions all --seeds 0,1,2 --workers 2 --out sweeps/iemocap
      hardymer sweep --config grid.yaml --out sweeps/g
      hardymer sweep --config grid.yaml --backend ray --address auto --cpus-per-cell 4 \
          --gpus-per-cell 1 --out /shared/sweeps/g
    """
    from .. import api
    from ..runs.sweep import Backend, load_spec
    _check_out(out)
    try:
        seed_list = [int(x) for x in seeds.split(",")] if seeds else None
    except ValueError:
        _fail(f"--seeds {seeds!r}: expected comma-separated integers such as 0,1,2")
    sets = list(set_) + ([f"train.folds_scheme={folds_scheme}"] if folds_scheme else [])
    try:
        spec = load_spec(config, data=data,
                         methods=methods.split(",") if methods else None,
                         conditions=conditions.split(",") if conditions else None,
                         seeds=seed_list, folds=folds, protocol=protocol, set=sets or None)
    except (ValueError, OSError) as err:
        _fail(str(err))
    spec.trust_pickle = trust_pickle  # only the command line may allow a pickle
    spec.log = _checked_log(log)
    typer.echo(f"sweep: {', '.join(v.name for v in spec.methods)} × "
               f"{', '.join(spec.conditions)} × folds {spec.folds} × seeds "
               f"{', '.join(map(str, spec.seeds))} on {spec.data} -> {out}")
    t0 = time.perf_counter()
    try:
        store = api.sweep(spec, out, workers=workers, progress=progress, on_plan=typer.echo,
                          backend=Backend(backend, address, cpus_per_cell, gpus_per_cell))
    except (ValueError, KeyError) as err:
        _fail(err.args[0] if isinstance(err, KeyError) else str(err))
    typer.echo(f"{len(store)} cells in {out / 'results.sqlite'} "
               f"({time.perf_counter() - t0:.0f} s)")
    if report:
        _write_report(out, out / "report", trust_pickle)


def _checked_log(log: list[str]) -> list[str]:
    from ..training import tracking
    try:
        tracking.check(list(log))
    except ValueError as err:
        _fail(str(err))
    return list(log)


def _write_report(sweep_dir: Path, out: Path, trust_pickle: bool = False,
                  html: bool = False) -> dict:
    from .. import api
    from ..reports.sweep import ReportError
    try:
        res = api.report(sweep_dir, out, trust_pickle=trust_pickle, html=html)
    except ReportError as err:
        _fail(str(err))
    typer.echo("\n" + res["text"])
    typer.echo("wrote " + ", ".join(str(p) for p in res["paths"].values()))
    return res


@app.command("report")
def report_cmd(
    sweep_dir: Path = typer.Argument(..., help="A folder made by `hardymer sweep`."),
    out: Path = typer.Option(..., "--out", "-o", help="Report folder."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Let the hardness "
                                      "section reopen reference-layout data (a label pickle)."),
    html: bool = typer.Option(False, "--html", help="Also write OUT/report.html: provenance, "
                              "tables (click a header to sort), plots and hardness on one "
                              "self-contained page (images inlined, nothing fetched) to open "
                              "or send."),
) -> None:
    """Tables in the papers' layout (Markdown, CSV, LaTeX), ours beside the published figures,
    paired statistics between methods, and plots — from a sweep's results store.

    Example: hardymer report sweeps/s1 --out sweeps/s1/report --html
    """
    _write_report(sweep_dir, out, trust_pickle, html)


@app.command()
def quickstart(
    out: Path = typer.Option(Path("runs/quickstart"), "--out", "-o", help="Run folder."),
    preset: str = typer.Option("demo", help="Synthetic preset to generate."),
    epochs: int = typer.Option(10, help="Epochs per stage (the papers use 100 + 100 for MoMKE "
                               "and 25 + 25 for HARDY-MER; this is a short demonstration "
                               "budget)."),
    fold: int = typer.Option(0, help="Fold to run (0 = test on session 1)."),
    zero_fill: bool = typer.Option(True, help="Also train the zero-fill floor."),
    log: list[str] = typer.Option([], "--log", help=LOG_HELP),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """The README's main job: HARDY-MER vs MoMKE (and the zero-fill floor) on generated data.

    Generates an IEMOCAP-shaped data set with planted hardness (no download), writes it in
    the generic format under OUT/data-PRESET, runs a sweep of each method on one fold under
    all seven conditions with validation selection (results store OUT/results.sqlite, run
    folders under OUT/runs), and writes the report under OUT/report: the per-condition WA/UA
    table in the papers' layout (Markdown, CSV, LaTeX), paired differences between the
    methods, ours beside the published figures, a plot, and HARDY-MER's hardness tables and
    plots. Resumable.
    """
    from .. import api
    from ..data.generic import write_generic
    from ..data.synthetic import generate
    from ..runs.sweep import SweepSpec, Variant
    t0 = time.perf_counter()
    data_dir = out / f"data-{preset}"
    if not (data_dir / "dataset.json").is_file():
        write_generic(generate(preset, seed=0), data_dir, overwrite=True)
    variants = [Variant("momke", "momke", [f"train.epochs={[epochs, epochs]}"]),
                Variant("hardymer", "hardymer", [f"train.epochs={[epochs, epochs]}",
                                                 f"model.teacher_epochs={[epochs, epochs]}"])]
    if zero_fill:
        variants.insert(0, Variant("zero-fill", "zero-fill", [f"train.epochs={[2 * epochs]}"]))
    spec = SweepSpec(data=str(data_dir.resolve()), methods=variants, conditions=["all"],
                     folds=str(fold), seeds=[0], protocol="val",
                     # patience: the quickstart stops a stage-2 fit that stalls (the papers'
                     # presets never do, so that they reproduce)
                     set=["train.lr=1e-3", "train.batch_size=8", "train.patience=4"],
                     log=_checked_log(log))
    typer.echo(f"{preset!r} preset in {data_dir}; training "
               f"{', '.join(v.name for v in variants)} on fold {fold} under all seven "
               f"conditions ({epochs} epochs per stage, lr 1e-3, batch 8, early stopping after 4 "
               "epochs without a better val WA: a demonstration budget, not the papers')")
    try:
        api.sweep(spec, out, progress=progress)
    except ValueError as err:
        _fail(f"{err} (e.g. --out runs/quickstart-{preset}-{epochs})")
    _write_report(out, out / "report", html=True)
    typer.echo(f"done in {time.perf_counter() - t0:.0f} s; report in {out / 'report'} "
               f"(one page: {out / 'report' / 'report.html'})")


from . import media  # noqa: E402,F401  (registers extract and predict)


def main() -> None:  # pragma: no cover
    app(prog_name="hardymer")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
