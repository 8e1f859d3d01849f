"""Predict the emotion of new utterances with a trained run, from whatever modalities exist.

:func:`load` opens a run folder made by ``hardymer train`` on a data set made by
``hardymer extract``, or a folder made from one by ``hardymer export`` (:mod:`hardymer.runs.export`); the data set's provenance names the extractors, so a new clip goes
through exactly the extraction the model was trained on. For each utterance::

    given media -> extract (the run's extractors) -> [HARDY-MER: the fold's fine-tuning nets]
      -> the model trained under that missing pattern -> class probabilities
      -> nearest training utterances (FAISS, same modalities, same feature space) + their labels
      -> HARDY-MER: its own h_ind (the fold's teacher) + the neighbours' mean curriculum h

Which model answers: the cell trained under exactly the given pattern (``at`` for audio +
text) when the run has it, else one trained under ``random:p``, else the full-modality one,
else the first; the answer says which (``model.trained_on``, ``model.match``).

Hardness of a *new* sample: its own ``h_ind`` is computed as in training (the fold's teacher,
normalised over the training set); its combined ``h`` cannot be, since ``h_dir`` needs the true
values of the missing modalities, which a deployment sample does not have. ``h`` is therefore
the mean h of its nearest training neighbours under the same pattern, as the fold's curriculum
plan scored them (spec §1.3): how hard comparable training cases were.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..data import open_data
from ..data.dataset import MERDataset, pick_rows, sequences_batch
from ..data.standardize import fold_inputs
from ..data.validate import DataError
from ..features.extract import extract_modality, given, utterances_of
from ..features.extractors import MODALITIES, Utterance, create_extractor
from ..features.manifest import Manifest, read_manifest
from ..models import get_method_class
from ..protocol.conditions import canonical_name, parse_condition
from ..protocol.splits import make_folds
from ..retrieval import FeatureDatabase, retrieve_supports
from ..runs.experiment import build_method
from ..runs.export import ExportError, open_export
from ..runs.layout import Run
from ..training.checkpoint import checkpoint_exists, load_checkpoint
from ..training.trainer import resolve_device

NAMES = {v: k for k, v in MODALITIES.items()}   # "audio" -> "a"


class PredictError(ValueError):
    """The run or the request does not allow a prediction (message says what to do)."""


def load(run: str | Path, fold: int | None = None, device: str = "auto") -> "Predictor":
    """Open a trained run for prediction (see :class:`Predictor`)."""
    return Predictor(run, fold=fold, device=device)


class Predictor:
    """A trained run, ready to predict new utterances.

    Parameters
    ----------
    run : run folder (``run.json``) trained on a data set made by ``hardymer extract``
    fold : which fold's models answer (default: the run's first fold)
    device : "auto" (CUDA when available), "cpu", "cuda", …

    Examples
    --------
    >>> import hardymer                                                  # doctest: +SKIP
    >>> p = hardymer.load("runs/mine")                                   # doctest: +SKIP
    >>> p.predict(audio="clip.wav", text="I can't believe it")           # doctest: +SKIP
    {'prediction': 'happy', 'probabilities': {...}, 'modalities': ['audio', 'text'], ...}
    """

    def __init__(self, run: str | Path, fold: int | None = None, device: str = "auto"):
        try:
            self._run = Run.open(run)
        except FileNotFoundError as err:
            raise PredictError(str(err)) from None
        self.run = self._run.path
        self.meta = self._run.meta
        self.cfg = self._run.config
        try:   # a folder of `hardymer export`: its own data, fold and statistics
            self.export = open_export(self.run)
        except ExportError as err:
            raise PredictError(str(err)) from None
        source = str(self.export.data_path) if self.export else self._run.data
        try:
            self.dataset = open_data(source, mmap=True)
        except (DataError, FileNotFoundError) as err:
            raise PredictError(f"cannot reopen the run's data {self.meta['data']!r}: {err}") \
                from err
        ds = self.dataset
        changes = self._run.data_changes(ds)
        if changes:
            raise PredictError(self._run.data_changed_message(changes, "trained")
                               + "; folds and neighbours would not line up. Re-train on the "
                               "current data, or extract the changes into another folder.")
        prov = (ds.meta.get("extraction") or {}).get("extractors")
        source_data = self.export.meta["source_data"] if self.export else self.meta["data"]
        if not prov:
            raise PredictError(f"{self.run} was trained on {source_data!r}, whose features "
                               "were not made by `hardymer extract`, so there are no extractors "
                               "to turn new media into the same features. Train on a data set "
                               "made by `hardymer extract` (or use `hardymer evaluate` on "
                               "feature data).")
        self.extractors = {}
        for m in ds.modalities:
            ex = create_extractor(prov[m]["spec"], prov[m]["modality"])
            if ex.dim != ds.dims[m]:
                raise PredictError(f"extractor {ex.spec!r} gives {ex.dim} values but the run's "
                                   f"data have {ds.dims[m]} for modality {m!r}")
            self.extractors[m] = ex
        fold = self._run.folds[0] if fold is None else fold
        if fold not in self._run.folds:
            raise PredictError(f"fold {fold} was not {'exported' if self.export else 'trained'}"
                               f" in {self.run}; {'exported' if self.export else 'trained'} "
                               f"folds: {self._run.folds}")
        if self.export:
            self.fold = self.export.fold(ds)
        else:
            self.fold = make_folds(ds, val_fraction=self.cfg.train.val_fraction,
                                   seed=self.cfg.train.split_seed,
                                   scheme=self.cfg.train.folds_scheme)[fold]
        self.device = resolve_device(device)
        cls = get_method_class(self.cfg.method)
        config = cls.Config(**self.cfg.model)
        fold_dir = self._run.fold_dir(self.fold.index)
        # What the models read: the fold's standardised features when the run standardised
        # (an export carries the statistics themselves).
        self.inputs, self.scaler = self.export.inputs(ds) if self.export else \
            fold_inputs(self.cfg.train.standardize, ds, self.fold.train)
        self.train_ids = ds.rows_of(self.fold.train)
        try:
            self.reference = cls.test_time_dataset(config, self.inputs, fold_dir)
            # What the method adds (HARDY-MER: fine-tuned new rows, its own hardness).
            self.extras = cls.predict_extras(config, fold_dir=fold_dir, dataset=ds,
                                             inputs=self.inputs, reference=self.reference,
                                             train_ids=self.train_ids, device=self.device)
            self.reference = self.extras.neighbour_data(self.reference)
        except FileNotFoundError as err:
            raise PredictError(str(err)) from err
        self._models: dict[str, torch.nn.Module] = {}
        self._databases: dict[tuple, tuple] = {}

    # --- what answers ----------------------------------------------------------------------
    @property
    def modalities(self) -> tuple[str, ...]:
        return self.dataset.modalities

    def _cell_for(self, keep: tuple[str, ...]) -> tuple[str, str]:
        """(trained condition, match kind) of the model that answers pattern ``keep``."""
        mods = self.modalities
        trained = self.meta["conditions"]
        exact = canonical_name(keep, mods)
        if exact in trained:
            return exact, "exact"
        rand = [c for c in trained if c.startswith("random")]
        if rand:
            return rand[0], "random missingness"
        full = canonical_name(mods, mods)
        if full in trained:
            return full, "full-modality model"
        return trained[0], "other pattern"

    def _model(self, condition: str):
        if condition not in self._models:
            stem = self._run.checkpoint(self.fold.index, condition)
            if not checkpoint_exists(stem):
                raise PredictError(f"{stem}.safetensors missing: fold {self.fold.index} under "
                                   f"{condition} has not finished (re-run the train command)")
            method = build_method(self.cfg, self.reference)
            load_checkpoint(stem, method)
            self._models[condition] = method.to(self.device).eval()
        return self._models[condition]

    # --- prediction ------------------------------------------------------------------------
    def predict(self, audio: str | Path | None = None, text: str | None = None,
                video: str | Path | None = None, start: float | None = None,
                end: float | None = None, neighbours: int = 5) -> dict:
        """Predict one utterance from any subset of its modalities.

        Returns a dict: ``prediction``, ``probabilities`` (classification) or ``value``,
        ``modalities`` used, ``missing``, ``model`` (fold, condition trained on, match),
        ``hardness`` (HARDY-MER runs), ``neighbours`` (utterance_id, label, distance), and
        ``extraction`` (what happened to each given modality).
        """
        if audio is None and video is not None and \
                self.dataset.meta["extraction"].get("audio_from_video"):
            audio = video           # the run's data took the audio from the video's sound
        item = Utterance("query", audio=Path(audio) if audio else None,
                         video=Path(video) if video else None,
                         text=text if text and text.strip() else None, start=start, end=end)
        if item.audio is None and item.video is None and item.text is None:
            raise PredictError("nothing to predict from: give at least one of audio, text, "
                               "video")
        result = self.predict_items([item], ["query"], neighbours=neighbours)[0]
        if "error" in result:
            raise PredictError(result["error"])
        return result

    def predict_manifest(self, manifest: str | Path | Manifest, neighbours: int = 5,
                         audio_from_video: bool | None = None,
                         progress: bool = False) -> list[dict]:
        """Predict every utterance of a manifest (same columns as ``hardymer extract``);
        utterances sharing a ``sequence_id`` are one dialogue, in manifest order.
        ``audio_from_video`` defaults to what the run's data were extracted with."""
        manifest = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
        if audio_from_video is None:
            audio_from_video = bool(self.dataset.meta["extraction"].get("audio_from_video"))
        items = utterances_of(manifest.table, audio_from_video)
        return self.predict_items(items, list(manifest.table["sequence_id"]),
                                  neighbours=neighbours, progress=progress,
                                  speakers=list(manifest.table["speaker"]))

    def predict_items(self, items: Sequence[Utterance], sequence_ids: Sequence[str],
                      neighbours: int = 5, progress: bool = False,
                      speakers: Sequence[str] | None = None) -> list[dict]:
        feats, avail, status = self._extract(items, progress)
        return self.predict_features(feats, avail, [it.utterance_id for it in items],
                                     sequence_ids, neighbours, status, speakers)

    def _extract(self, items, progress):
        """Features {m: (n, d_m)}, availability (n, M) and per-item status of each modality,
        extracted with the run's extractors (the same code path as ``hardymer extract``)."""
        status = [{MODALITIES[m]: "ignored: the run was trained without it"
                   for m in MODALITIES if m not in self.modalities and given(it, m)}
                  for it in items]
        feats, avail = {}, np.zeros((len(items), len(self.modalities)), dtype=bool)
        for j, m in enumerate(self.modalities):
            r = extract_modality(self.extractors[m], items, progress=progress)
            feats[m], avail[:, j] = r.features, r.available
            for i, st in enumerate(r.status):
                status[i][MODALITIES.get(m, m)] = str(st)
        return feats, avail, status

    def predict_features(self, features: dict[str, np.ndarray], available: np.ndarray,
                         utterance_ids: Sequence[str], sequence_ids: Sequence[str],
                         neighbours: int = 5, status: list[dict] | None = None,
                         speakers: Sequence[str] | None = None) -> list[dict]:
        """Predict from already extracted features {m: (N, d_m)} and availability (N, M)."""
        n = len(utterance_ids)
        if self.scaler is not None:
            features = self.scaler.transform(features, available, self.modalities)
        raw_features = features
        features = self._test_time_features(features, available)
        table = pd.DataFrame({"utterance_id": [str(u) for u in utterance_ids],
                              "sequence_id": [str(s) for s in sequence_ids],
                              "speaker": [str(s) for s in speakers] if speakers else [""] * n})
        table["position"] = table.groupby("sequence_id", sort=False).cumcount()
        table["split"] = ""
        queries = MERDataset(name="queries", task=self.dataset.task, modalities=self.modalities,
                             features=features, available=available.copy(),
                             labels=np.zeros(n, self.dataset.labels.dtype), utterances=table,
                             class_names=self.dataset.class_names)
        results: list[dict] = [{} for _ in range(n)]
        codes = available.astype(np.int64) @ (1 << np.arange(len(self.modalities)))
        for code in np.unique(codes):
            rows = np.flatnonzero(codes == code)
            keep = tuple(m for j, m in enumerate(self.modalities) if code >> j & 1)
            if not keep:
                for i in rows:
                    results[i] = {"error": "no usable modality: " + "; ".join(
                        f"{k} {v}" for k, v in (status[i] if status else {}).items())}
                continue
            condition, match = self._cell_for(keep)
            cond = parse_condition(condition, self.modalities)
            if not cond.is_random:
                # A model trained under a fixed pattern only reads that pattern's modalities.
                keep = tuple(m for m in keep if m in cond.keep)
            if not keep:
                for i in rows:
                    results[i] = {"error": f"the run has no model for these modalities (its "
                                           f"models: {', '.join(self.meta['conditions'])})"}
                continue
            # What the answering model may read in the whole dialogue: its training pattern.
            mask = np.ones_like(available)
            if not cond.is_random:
                mask[:] = False
                mask[:, [self.modalities.index(m) for m in cond.keep]] = True
            outputs = self._forward(queries, condition, rows, mask)
            near = self._neighbours(features, keep, rows, neighbours)
            cell = self._run.cell(self.fold.index, cond)
            hard = self.extras.neighbour_hardness(cell, near[0]) if near is not None else None
            own = self.extras.own_hardness(cell, replace(
                queries, features=raw_features, available=queries.available & mask), rows)
            for r, i in enumerate(rows):
                results[i] = self._answer(outputs[r], keep, condition, match, near, hard, r)
                if own is not None and results[i]["hardness"] is not None:
                    for term, values in own.items():
                        results[i]["hardness"][term] = round(float(values[r]), 4)
        for i in range(n):
            results[i] = {"utterance_id": str(utterance_ids[i]), **results[i]}
            if status:
                results[i]["extraction"] = status[i]
        return results

    def _test_time_features(self, features, available):
        """New rows as the models read them (the method's extras; HARDY-MER: fine-tuned)."""
        try:
            return self.extras.features(features, available)
        except FileNotFoundError as err:
            raise PredictError(str(err)) from err

    @torch.no_grad()
    def _forward(self, queries: MERDataset, condition: str, rows: np.ndarray,
                 mask: np.ndarray) -> np.ndarray:
        """Model outputs (len(rows), C) of the query rows, run in their whole sequences with
        what ``mask`` (n, M) lets the model read (ANDed with what each utterance has)."""
        batch = sequences_batch(queries, rows, mask).to(self.device)
        out = self._model(condition)(batch)                           # (B, S, C)
        return pick_rows(out[batch.utt_mask].float().cpu().numpy(),
                         batch.index[batch.utt_mask].cpu().numpy(), rows)

    def _neighbours(self, features, keep, rows, k) -> tuple[np.ndarray, np.ndarray] | None:
        """Ids (Q, k) and combined distances (Q, k) of the nearest training utterances that
        have every modality in ``keep``, in the model's input feature space."""
        if k <= 0:
            return None
        if keep not in self._databases:
            ref = self.reference
            idx = [self.modalities.index(m) for m in keep]
            ids = self.train_ids[ref.available[self.train_ids][:, idx].all(1)]
            if len(ids) == 0:
                self._databases[keep] = None
            else:
                feats = {m: np.asarray(ref.features[m][ids], np.float32) for m in keep}
                self._databases[keep] = (FeatureDatabase.build(feats, ids=ids), feats)
        entry = self._databases[keep]
        if entry is None:
            return None
        db, feats = entry
        q = {m: np.asarray(features[m][rows], np.float32) for m in keep}
        lists = retrieve_supports(db, q, -1 - np.arange(len(rows)),
                                  np.ones((len(rows), len(keep)), bool), 1.0,
                                  k=min(k, len(db)), features=feats)
        return lists.ids, lists.distances

    def _answer(self, out, keep, condition, match, near, hard, r) -> dict:
        ds = self.dataset
        res: dict = {}
        if ds.task == "classification":
            p = torch.softmax(torch.from_numpy(out), -1).numpy()
            names = ds.class_names or tuple(str(i) for i in range(len(p)))
            res["prediction"] = names[int(p.argmax())]
            res["probabilities"] = {c: round(float(v), 6) for c, v in zip(names, p)}
        else:
            res["prediction"] = res["value"] = float(out[0])
        res["modalities"] = [MODALITIES.get(m, m) for m in keep]
        res["missing"] = [MODALITIES.get(m, m) for m in self.modalities if m not in keep]
        res["model"] = {"run": str(self.run), "method": self.cfg.method,
                        "fold": self.fold.index, "trained_on": condition, "match": match}
        res["hardness"] = None
        if hard is not None:
            h = hard[r][np.isfinite(hard[r])]
            res["hardness"] = {
                "h": round(float(h.mean()), 4) if len(h) else None,
                "estimate": f"h: mean curriculum hardness of the {len(h)} nearest training "
                            f"utterances under {condition} (fold {self.fold.index}); h_ind: "
                            "this sample's own indirect hardness, normalised over training"}
        res["neighbours"] = []
        if near is not None:
            ids, dist = near
            utt = ds.utterances["utterance_id"].to_numpy()
            for j in range(ids.shape[1]):
                g = int(ids[r, j])
                if g < 0:
                    continue
                label = ds.labels[g]
                entry = {"utterance_id": str(utt[g]),
                         "label": (ds.class_names[int(label)] if ds.class_names
                                   else float(label)),
                         "distance": round(float(dist[r, j]), 6)}
                if hard is not None and np.isfinite(hard[r, j]):
                    entry["h"] = round(float(hard[r, j]), 4)
                res["neighbours"].append(entry)
        return res

