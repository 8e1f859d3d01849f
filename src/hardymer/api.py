"""The Python API: the six things the command line does, as functions.

    import hardymer
    report = hardymer.extract("clips.csv", "data/mine")              # media -> data set
    records = hardymer.train("synth:demo", "hardymer", "at,tv", folds=[0], out="runs/h")
    store = hardymer.sweep(hardymer.SweepSpec(...), "sweeps/s")       # a grid into a store
    hardymer.report("sweeps/s", "sweeps/s/report")                    # the papers' tables
    hardymer.load("runs/mine").predict(audio="a.wav", text="…")       # a run -> prediction
    hardymer.export("runs/mine", 0, "models/mine")                     # a shareable folder

Each function is a thin layer over the package's own parts; the command line calls these.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .data import MERDataset, open_data
from .features.extract import ExtractionReport
from .features.extract import extract as _extract
from .inference import Predictor
from .models import get_method_class
from .protocol.conditions import Condition, all_fixed_conditions, parse_condition
from .reports.sweep import write_sweep_report
from .runs.config import RunConfig, load_run_config
from .runs.experiment import run_experiment
from .runs.export import export_run
from .runs.layout import source_id
from .runs.store import ResultsStore
from .runs.sweep import Backend, SweepSpec, Variant, run_sweep


def extract(source, out=None, **options) -> ExtractionReport:
    """Extract features of a manifest or media folder into a generic data set.

    See :func:`hardymer.features.extract.extract` for the options (extractor specs per
    modality, task, classes).
    """
    return _extract(source, out, **options)


def load(run, fold: int | None = None, device: str = "auto") -> Predictor:
    """Open a trained run for prediction: ``hardymer.load(run).predict(audio=..., text=...)``.

    See :class:`hardymer.inference.Predictor`.
    """
    return Predictor(run, fold=fold, device=device)


def export(run, fold: int, out, overwrite: bool = False, trust_pickle: bool = False) -> dict:
    """One fold of a trained run as a self-contained folder with a model card, which
    :func:`load` (and ``hardymer predict``) accept. See :mod:`hardymer.runs.export`.
    ``trust_pickle`` lets it reopen reference-layout data (a label pickle)."""
    return export_run(run, fold, out, overwrite=overwrite,
                      opener=lambda src: open_data(src, allow_pickle=trust_pickle))


def run_config(method: str, family: str, overrides: Sequence[str] = (),
               config_file: str | Path | None = None, *, protocol: str | None = None,
               seed: int | None = None, ablations: Sequence[str] = (),
               switches: Sequence[str] = ()) -> RunConfig:
    """A method's preset for a data-set family with the user's changes, in the order the
    command line applies them: ``overrides`` (``section.key=value``), the protocol, the
    method's named ablations and switches (``no-h-dir``, ``reference-compat``), the seed.

    Raises ValueError (unknown method, ablation or switch; a bad value) with what to do.
    """
    try:
        cls = get_method_class(method)
    except KeyError as err:
        raise ValueError(err.args[0]) from None
    extra = list(overrides) + ([f"train.protocol={protocol}"] if protocol else [])
    for name in ablations:
        if name not in cls.ablations:
            raise ValueError(f"unknown ablation {name!r} for {method}; "
                             + (f"expected one of {', '.join(cls.ablations)}" if cls.ablations
                                else "it has none"))
        extra += cls.ablations[name].overrides
    for name in switches:
        if name not in cls.switches:
            raise ValueError(f"--{name} does not apply to {method}")
        extra.append(cls.switches[name])
    if seed is not None:
        extra.append(f"train.seed={seed}")
    return load_run_config(method, family, extra, str(config_file) if config_file else None)


def conditions_of(text: str | Sequence[str | Condition], modalities: Sequence[str]
                  ) -> list[Condition]:
    """``"a,at"``, ``["a", "random:0.3"]`` or ``"all"`` (the seven fixed conditions);
    Condition objects pass through."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    if [str(p).strip() for p in parts] in (["all"], ["every"], ["*"]):
        return all_fixed_conditions(tuple(modalities))
    return [p if isinstance(p, Condition) else parse_condition(p, tuple(modalities))
            for p in parts]


def train(data: str | MERDataset, method: str = "momke",
          conditions: str | Sequence[str | Condition] = "atv", *,
          folds: Sequence[int] | None = None, out: str | Path | None = None,
          config: RunConfig | None = None,
          overrides: Sequence[str] = (), protocol: str | None = None,
          data_source: str | None = None, trust_pickle: bool = False,
          progress: bool = True) -> list[dict]:
    """Train and evaluate ``method`` over folds × conditions; returns one record per cell.

    ``data`` is a source (:func:`hardymer.data.open_data`) or a data set; ``out`` a run
    folder (resumable; None trains in memory); ``config`` a resolved :func:`run_config`
    (default: the preset with ``overrides`` and ``protocol``).
    """
    if isinstance(data, MERDataset):
        ds, source = data, data_source or ""
    else:
        ds, source = open_data(data, allow_pickle=trust_pickle, mmap=True), data_source or source_id(data)
    cfg = config or run_config(method, ds.family, overrides, protocol=protocol)
    conds = conditions_of(conditions, ds.modalities)
    return run_experiment(cfg, ds, conds, None if folds is None else list(folds),
                          Path(out) if out is not None else None, data_source=source,
                          progress=progress)


def sweep(spec: SweepSpec, out: str | Path, workers: int = 1,
          progress: bool = True, on_plan=None, backend: Backend | None = None) -> ResultsStore:
    """Run every unfinished cell of a grid (:class:`SweepSpec`, or
    :func:`hardymer.runs.sweep.load_spec` for a YAML file) into ``out``; ``on_plan`` (e.g.
    ``print``) hears each variant's fold scheme and schedule before training starts;
    ``backend``: local processes (default) or Ray (:class:`hardymer.runs.sweep.Backend`)."""
    return run_sweep(spec, Path(out), workers=workers, progress=progress, on_plan=on_plan,
                     backend=backend or Backend())


def report(sweep_dir: str | Path, out: str | Path, trust_pickle: bool = False,
           html: bool = False) -> dict:
    """The papers'-layout tables, published figures, paired statistics, plots and hardness
    of a sweep folder, into ``out``; returns ``{"text", "paths", "summary"}``.
    ``trust_pickle`` lets the hardness section reopen reference-layout data; ``html`` also
    writes ``report.html``, everything on one self-contained page."""
    return write_sweep_report(Path(sweep_dir), Path(out), trust_pickle=trust_pickle, html=html)


__all__ = ["extract", "load", "train", "sweep", "report", "run_config", "conditions_of",
           "source_id", "SweepSpec", "Variant"]
