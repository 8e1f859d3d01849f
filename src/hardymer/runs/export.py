"""A shareable model folder: ``hardymer export RUN --fold K --out DIR``; this module owns it.

Layout (an export is itself a one-fold run folder, so :class:`~hardymer.runs.layout.Run` hands
out its paths and ``hardymer predict DIR`` / ``hardymer.load(DIR)`` read it as a run)::

    DIR/export.json            the marker: source run, fold, conditions exported, rows, versions
    DIR/MODEL_CARD.md          the model card (Hugging Face layout: YAML header, then sections)
    DIR/run.json               the run's config and conditions, fold K only, data = "data"
    DIR/data/                  the fold's training utterances in the generic format: the
                               neighbour database (features as extracted, labels, ids,
                               transcripts and media paths) with the extractors' provenance
    DIR/standardization.safetensors   the fold's per-modality mean and std (when the run
                               standardised): new utterances are scaled by exactly these
    DIR/fold<K>/<condition>/best.{safetensors,json}   the selected weights (no optimizer
                               state, no RNG) and result.json
    DIR/fold<K>/...            what the method's prediction extras read (``export_fold``;
                               HARDY-MER: fine-tuning networks, teacher, curriculum plans), with
                               utterance ids renumbered to ``data/``

Nothing in an export points back to the run or its data: delete both and it still predicts
with the same probabilities (``tests/test_predict.py``). Only finished cells are exported.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import open_data
from ..data.dataset import MERDataset
from ..data.generic import write_generic
from ..data.standardize import FoldScaler, standardize_wanted
from ..fileio import atomic_write_json, atomic_write_text
from ..models import get_method_class
from ..protocol.conditions import parse_condition
from ..protocol.splits import Fold, make_folds
from ..training.checkpoint import checkpoint_exists, export_weights
from ..version import __version__
from .layout import Run, versions

FORMAT = "hardymer-export"
SCALER_FILE = "standardization.safetensors"


class ExportError(ValueError):
    """The run cannot be exported as asked (message says what to do)."""


@dataclass
class Export:
    """An export folder, opened (see :func:`open_export`)."""

    path: Path
    meta: dict

    @property
    def data_path(self) -> Path:
        return self.path / "data"

    @property
    def fold_index(self) -> int:
        return int(self.meta["fold"])

    def fold(self, dataset: MERDataset) -> Fold:
        """The exported fold: every exported utterance is one of its training utterances."""
        empty = np.zeros(0, np.int64)
        return Fold(self.fold_index, self.meta["fold_name"], np.arange(len(dataset.sequences)),
                    empty, empty, self.meta.get("fold_scheme", ""))

    def inputs(self, dataset: MERDataset) -> tuple[MERDataset, FoldScaler | None]:
        """What the models read (standardised by the stored statistics when the run was)."""
        path = self.path / SCALER_FILE
        if not path.is_file():
            return dataset, None
        scaler = FoldScaler.load(path)
        return scaler.apply(dataset), scaler


def open_export(path: str | Path) -> Export | None:
    """The export at ``path``, None when ``path`` is an ordinary run folder."""
    marker = Path(path) / "export.json"
    if not marker.is_file():
        return None
    meta = json.loads(marker.read_text())
    if meta.get("format") != FORMAT:
        raise ExportError(f"{marker}: format {meta.get('format')!r}, expected {FORMAT!r}")
    return Export(Path(path), meta)


def export_run(run: str | Path, fold: int, out: str | Path, opener=None,
               overwrite: bool = False) -> dict:
    """Write the export of one fold of a run (see the module docstring).

    Returns ``{"path", "conditions", "skipped", "rows", "card"}``.
    """
    try:
        src = Run.open(run)
    except FileNotFoundError as err:
        raise ExportError(str(err)) from None
    out = Path(out)
    if open_export(src.path) is not None:
        raise ExportError(f"{src.path} is already an export; copy the folder to share it")
    if fold not in src.folds:
        raise ExportError(f"fold {fold} was not trained in {src.path}; trained folds: "
                          f"{src.folds} (pass --fold with one of them)")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ExportError(f"{out} exists and is not empty: choose another --out, or pass "
                              "--overwrite to replace it")
        if not (out / "export.json").is_file():
            raise ExportError(f"{out} is not an export folder; --overwrite replaces exports "
                              "only: choose another --out")
        shutil.rmtree(out)
    cfg = src.config
    cls = get_method_class(cfg.method)
    config = cls.Config(**cfg.model)
    try:
        dataset = (opener or open_data)(src.data)
    except FileNotFoundError as err:
        raise ExportError(f"cannot reopen the run's data {src.data!r}: {err}") from None
    changes = src.data_changes(dataset)
    if changes:
        raise ExportError(src.data_changed_message(changes, "trained") + "; the exported "
                          "neighbours would not be the training data: restore the data")
    folds = make_folds(dataset, val_fraction=cfg.train.val_fraction, seed=cfg.train.split_seed,
                       scheme=cfg.train.folds_scheme)
    the_fold = folds[fold]
    done = [c for c in src.conditions if src.result(fold, c) is not None
            and checkpoint_exists(src.checkpoint(fold, c))]
    skipped = [c for c in src.conditions if c not in done]
    if not done:
        raise ExportError(f"no finished cell in fold {fold} of {src.path}: finish training "
                          "(re-run the train command) before exporting")

    keep = np.zeros(dataset.n_utterances, bool)
    rows = np.sort(dataset.rows_of(the_fold.train))
    keep[rows] = True
    sub = dataset.select_utterances(keep)
    sub.meta["exported_from"] = {"run": str(src.path.resolve()), "data": src.data,
                                 "fold": fold, "fold_name": the_fold.name,
                                 "rows": "the fold's training utterances"}
    write_generic(sub, out / "data")
    data = open_data(str(out / "data"))
    if standardize_wanted(cfg.train.standardize, dataset):   # as fold_inputs fits it
        FoldScaler.fit(dataset, dataset.rows_of(the_fold.train)).save(out / SCALER_FILE)

    exp = Run(out)
    exp.prepare(cfg, "data", data, [parse_condition(c, dataset.modalities) for c in done],
                [fold], the_fold.scheme or None)
    cells = {}
    for c in done:
        export_weights(src.checkpoint(fold, c), exp.checkpoint(fold, c))
        exp.write_result(fold, c, src.result(fold, c))
        cells[c] = (src.cell(fold, c), exp.cell(fold, c))
    cls.export_fold(config, fold_dir=src.fold_dir(fold), out_fold_dir=exp.fold_dir(fold),
                    cells=cells, rows=rows)
    records = [r for r in src.records() if r["fold"] == fold and r["condition"] in done]
    card = model_card(src, out, cfg, dataset, the_fold, done, skipped, records, len(rows))
    atomic_write_text(out / "MODEL_CARD.md", card)
    atomic_write_json(out / "export.json", {
        "format": FORMAT, "format_version": 1, "method": cfg.method,
        "source_run": str(src.path.resolve()), "source_data": src.data, "fold": fold,
        "fold_name": the_fold.name, "fold_scheme": the_fold.scheme, "conditions": done,
        "skipped": skipped, "rows": int(len(rows)), "standardized": (out / SCALER_FILE).is_file(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": versions()})
    return {"path": out, "conditions": done, "skipped": skipped, "rows": int(len(rows)),
            "card": out / "MODEL_CARD.md"}


# --- the model card ----------------------------------------------------------------------
USE = {
    "iemocap": ("IEMOCAP: acted English dyadic dialogue (ten actors, scripted and improvised "
                "sessions, USC SAIL lab); emotions as annotated there.",
                "Acted, studio-recorded English speech by ten North-American actors: expect "
                "lower accuracy on spontaneous speech, other languages and accents, other "
                "microphones and cameras, and other emotion definitions."),
    "mosi": ("CMU-MOSI / MOSEI: English opinion monologues from YouTube videos, sentiment "
             "intensity in [-3, 3].",
             "English YouTube opinion videos: sentiment of monologue reviews, not emotion in "
             "conversation; speakers and topics are those of the corpus."),
    "generic": ("The user's own data set (generic format); see its dataset.json.",
                "Trained on the data named below: it knows only their speakers, language, "
                "recording conditions and label set."),
}
GENERATED = ("Generated by hardymer's synthetic generator (features with planted hardness, no "
             "real speech, text or faces).",
             "Trained on generated data: a demonstration of the toolkit, with no validity on "
             "any real recording. Do not use it to judge people.")


def _metric_table(records: list[dict], task: str) -> str:
    names = ("WA", "UA", "F1") if task == "classification" else ("ACC", "F1", "MAE", "Corr")
    pct = task == "classification"
    head = ["condition", "seed", "selected epoch"] + [f"test {n}" for n in names] + \
        [f"val {n}" for n in names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(records, key=lambda r: (r["condition"], r["seed"])):
        vals = [r["condition"], str(r["seed"]), str(r.get("selected_epoch", ""))]
        for split in ("test", "val"):
            for n in names:
                v = r.get(f"{split}_{n}")
                vals.append("" if v is None else f"{100 * v:.2f}" if pct and n != "MAE"
                            else f"{v:.4f}")
        lines.append("| " + " | ".join(vals) + " |")
    return "\n".join(lines)


def model_card(src: Run, out: Path, cfg, dataset: MERDataset, fold: Fold, done: list[str],
               skipped: list[str], records: list[dict], n_rows: int) -> str:
    """MODEL_CARD.md in the Hugging Face layout (YAML metadata block, then sections)."""
    cls = get_method_class(cfg.method)
    about = (cls.__doc__ or cfg.method).strip().split("\n\n")[0].split(". ")[0].rstrip(".")
    about = " ".join(about.split())
    generated = bool(dataset.meta.get("generator"))
    data_text, limits = GENERATED if generated else USE.get(dataset.family, USE["generic"])
    prov = (dataset.meta.get("extraction") or {}).get("extractors") or {}
    extractors = "; ".join(f"{m}: {p.get('spec', p)}" for m, p in prov.items()) or \
        "none recorded: the features were not made by `hardymer extract`, so `hardymer " \
        "predict` cannot turn new media into them and refuses this export; the weights load " \
        "into the method's model in code (`run.json` holds its config)"
    protocol = cfg.train.protocol
    rule = {"val": "the epoch with the best validation metric; test evaluated once, after "
                   "selection",
            "paper": "the epoch with the best test metric (the MoMKE/HARDY-MER papers' rule: "
                     "the test figures are optimistic)"}.get(protocol, protocol)
    metrics = ["WA", "UA", "F1"] if dataset.task == "classification" else ["ACC", "F1", "MAE",
                                                                             "Corr"]
    header = "\n".join([
        "---", "library_name: hardymer",
        "tags: [multimodal-emotion-recognition, missing-modalities, "
        f"{cfg.method}, {dataset.family}{', synthetic-data' if generated else ''}]",
        f"datasets: [{json.dumps(dataset.name)}]", f"metrics: [{', '.join(metrics)}]",
        "---"])
    scaled = (f"inputs standardised by the fold's training statistics in `{SCALER_FILE}`"
              if standardize_wanted(cfg.train.standardize, dataset) else
              "features used as they are (no standardisation)")
    classes = ", ".join(dataset.class_names) if dataset.class_names else "a real value"
    ablations = [k for k, a in cls.ablations.items()
                 if a.overrides and all(o.lower() in _overrides(cfg) for o in a.overrides)]
    return f"""{header}

# {cfg.method} on {dataset.name}, fold {fold.index} ({fold.name})

{about}. Exported by hardymer {__version__} from the run `{src.path}`.

## Model details

- **Method:** `{cfg.method}`{f" (ablations: {', '.join(ablations)})" if ablations else ""}; full
  configuration in `run.json` (`config.model`, `config.train`).
- **Inputs:** any subset of {", ".join(dataset.modalities)} (dims {dataset.dims}); one model per
  missing-modality condition it was trained under: {", ".join(done)}. A request answers with
  the model of its exact pattern when there is one, else a `random:p` model, else the
  full-modality one (the answer says which).
- **Output:** {classes}.
- **Features:** {extractors}.
- **Files:** weights in safetensors (`fold{fold.index}/<condition>/best.safetensors`), the
  training utterances used as neighbours in `data/` ({n_rows} utterances); {scaled}.

## Intended use

Research on emotion recognition when modalities are missing: reproducing and comparing
methods, and inspecting which samples are hard. Each prediction lists the nearest training
utterances and their labels, so a user can check what it rests on. Not for decisions about
people (hiring, health, policing, surveillance).

## Training data

{data_text} Data set `{dataset.name}`: {dataset.summary()}. Fold {fold.index}
({fold.name}, folds made by `{fold.scheme or "?"}`): trained on its training split, model
selected on its validation split{"" if protocol == "val" else " (see the protocol)"}, tested
on its test split.

## Training procedure

Selection protocol `{protocol}`: {rule}. Seed {cfg.train.seed}; hyper-parameters from the
method's preset for the `{dataset.family}` family, then the run's overrides (all in
`run.json`).

## Evaluation

Test split of fold {fold.index}, per condition (percent for WA/UA/F1):

{_metric_table(records, dataset.task)}
{f"{chr(10)}Not exported (unfinished when exported): {', '.join(skipped)}.{chr(10)}" if skipped else ""}
## Limitations

{limits} One fold of one seed: the spread over folds and seeds (see the run's report) is not
in these figures. Accuracy depends on which modalities a request has: see the table above.

## How to use

```bash
hardymer predict {out} --audio clip.wav --text "I can't believe it" --json
```

```python
import hardymer
model = hardymer.load("{out}")
model.predict(audio="clip.wav", text="I can't believe it")
```
"""


def _overrides(cfg) -> set[str]:
    return {f"{section}.{k}={v}".lower() for section, d in (("model", cfg.model),
                                                            ("train", vars(cfg.train)))
            for k, v in d.items()}
