"""``hardymer extract``: media -> a generic feature data set, resumable, one modality at a time.

Layout of the output folder::

    OUT/dataset.json, utterances.csv, features/<m>.npy, available.npy   the generic format
    OUT/extraction/<m>/log.jsonl        one line per (utterance, attempt): ok / absent / error
    OUT/extraction/<m>/vectors/*.npy    one vector per extracted utterance (the resume cache)
    OUT/extraction/errors.csv           the per-file error list of the last run

Every finished utterance is on disk before the next starts, so an interrupted run (or one
where some files fail) loses nothing: re-running the same command extracts only what is
missing or failed. A result is keyed by the utterance, its input (path, size, modification
time, start, end, or the transcript) and the extractor spec, so a changed file or extractor is
extracted again. The data set is (re)written at the end of every run; failed and absent
modalities are marked unavailable in ``available.npy``, never left as silent zeros.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..data.dataset import MERDataset
from ..data.generic import write_contents
from ..data.validate import DataError
from ..fileio import atomic_path, atomic_save_npy, scratch_folder, swap_into_place
from ..version import __version__
from .extractors import DEFAULTS, MODALITIES, Extracted, Extractor, Utterance, create_extractor
from .manifest import Manifest, read_manifest
from .media import NoStream

COLUMN_OF = {"a": "audio", "t": "text", "v": "video"}


@dataclass
class ExtractionReport:
    """What one run of :func:`extract` did."""

    path: Path | None
    n_utterances: int
    counts: dict[str, dict[str, int]]         # modality -> {ok, absent, error, not given}
    errors: pd.DataFrame                      # utterance_id, modality, file, error
    seconds: dict[str, float]                 # modality -> extraction seconds this run
    extracted: dict[str, int]                 # modality -> utterances extracted this run
    dataset: MERDataset | None = None

    def summary(self) -> str:
        lines = [f"{self.n_utterances} utterances" + (f" -> {self.path}" if self.path else "")]
        for m, c in self.counts.items():
            rate = (f", {self.extracted[m] / self.seconds[m]:.1f} utt/s"
                    if self.extracted.get(m) and self.seconds.get(m) else "")
            lines.append(f"  {MODALITIES[m]:5s} ok {c['ok']}, absent {c['absent']}, "
                         f"error {c['error']}, not given {c['not given']} "
                         f"(extracted now: {self.extracted.get(m, 0)}{rate})")
        if self.dataset is not None and not self.dataset.available.any(axis=1).all():
            empty = ~self.dataset.available.any(axis=1)
            ids = self.dataset.utterances["utterance_id"].to_numpy()[empty]
            lines.append(f"{int(empty.sum())} utterance(s) have no modality at all (first: "
                         f"{', '.join(map(str, ids[:5]))}): training and scoring leave them out")
        if len(self.errors):
            lines.append(f"{len(self.errors)} file(s) failed (their modality is marked "
                         "missing; fix them and re-run the same command to retry only those):")
            for r in self.errors.itertuples():
                lines.append(f"  {r.utterance_id} [{MODALITIES[r.modality]}] {r.file}: {r.error}")
        return "\n".join(lines)


def resolve_extractors(audio: str | Extractor | None = DEFAULTS["a"],
                       text: str | Extractor | None = DEFAULTS["t"],
                       video: str | Extractor | None = DEFAULTS["v"]) -> dict[str, Extractor]:
    """{modality: extractor}; a spec of ``None``/``"none"`` leaves the modality out."""
    out = {}
    for m, spec in (("a", audio), ("t", text), ("v", video)):
        if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "none")):
            continue
        out[m] = spec if isinstance(spec, Extractor) else create_extractor(spec, m)
    return out


def utterances_of(table: pd.DataFrame, audio_from_video: bool = False) -> list[Utterance]:
    items = []
    for r in table.itertuples(index=False):
        audio = r.audio or (r.video if audio_from_video else "")
        items.append(Utterance(
            utterance_id=r.utterance_id, audio=Path(audio) if audio else None,
            video=Path(r.video) if r.video else None, text=r.text if r.text.strip() else None,
            start=None if pd.isna(r.start) else float(r.start),
            end=None if pd.isna(r.end) else float(r.end)))
    return items


def given(item: Utterance, m: str) -> bool:
    """Whether the manifest gives modality ``m`` of ``item``."""
    return {"a": item.audio, "t": item.text, "v": item.video}[m] is not None


def _signature(item: Utterance, m: str, spec: str) -> str:
    """Key of a result: the utterance, what is read of it, and the extractor spec."""
    if m == "t":
        what = ["text", hashlib.sha1((item.text or "").encode()).hexdigest()]
    else:
        path = item.audio if m == "a" else item.video
        try:
            st = os.stat(path)
            what = [str(path), st.st_size, st.st_mtime_ns]
        except (OSError, TypeError):
            what = [str(path), "unreadable"]
    window = [item.start, item.end] if m != "t" else []   # a transcript has no time window
    raw = json.dumps([item.utterance_id, m, spec, what, window])
    return hashlib.sha1(raw.encode()).hexdigest()[:24]


def run_extractor(extractor: Extractor, items: Sequence[Utterance],
                  on_result: Callable[[int, Extracted | Exception, float], None],
                  progress: bool = False) -> None:
    """Extract ``items`` in the extractor's batches; ``on_result(i, result_or_error, seconds)``
    is called as each one finishes. A failing batch is retried item by item, so one bad file
    fails alone."""
    extractor.ensure_loaded()
    bar = tqdm(total=len(items), desc=f"{MODALITIES[extractor.modality]} ({extractor.name})",
               unit="utt", disable=not progress, leave=False)
    bs = max(1, extractor.batch_size)
    for a in range(0, len(items), bs):
        chunk = items[a:a + bs]
        t0 = time.perf_counter()
        try:
            results = [_checked(extractor, r) for r in extractor.extract_batch(chunk)]
            each = (time.perf_counter() - t0) / len(chunk)
            for j, r in enumerate(results):
                on_result(a + j, r, each)
        except Exception as err:  # noqa: BLE001 — isolate the failing file(s)
            if len(chunk) == 1:
                on_result(a, _outcome(err), time.perf_counter() - t0)
            else:
                for j, it in enumerate(chunk):
                    t1 = time.perf_counter()
                    try:
                        on_result(a + j, _checked(extractor, extractor.extract_batch([it])[0]),
                                  time.perf_counter() - t1)
                    except Exception as err:  # noqa: BLE001
                        on_result(a + j, _outcome(err), time.perf_counter() - t1)
        bar.update(len(chunk))
    bar.close()


def _checked(extractor: Extractor, result: Extracted) -> Extracted:
    """A vector of the announced size, finite, or an error (before anything is cached)."""
    v = result.vector
    if v is not None:
        v = np.asarray(v, dtype=np.float32)
        if v.shape != (extractor.dim,):
            raise ValueError(f"extractor {extractor.spec!r} returned shape {v.shape}; it "
                             f"announces ({extractor.dim},) (check its options, e.g. layer=)")
        if not np.isfinite(v).all():
            raise ValueError(f"extractor {extractor.spec!r} returned non-finite values")
        result.vector = v
    return result


def _outcome(err: Exception) -> Extracted | Exception:
    """A file that lacks the stream (a silent video as audio) is an absent modality, not a
    failure; everything else stays an error."""
    return Extracted(None, err.reason) if isinstance(err, NoStream) else err


class _Cache:
    """Per-modality log + vector files under OUT/extraction/<m>/."""

    def __init__(self, folder: Path):
        self.folder = folder
        (folder / "vectors").mkdir(parents=True, exist_ok=True)
        self.log_path = folder / "log.jsonl"
        self.records: dict[str, dict] = {}
        if self.log_path.is_file():
            for line in self.log_path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill: that utterance is simply redone
                self.records[rec["key"]] = rec
        self._log = open(self.log_path, "a")
        if self.log_path.stat().st_size and not self.log_path.read_bytes().endswith(b"\n"):
            self._log.write("\n")   # a line cut by a kill must not swallow the next one

    def done(self, key: str) -> dict | None:
        rec = self.records.get(key)
        if rec is None or rec["status"] == "error":
            return None
        if rec["status"] == "ok" and not (self.folder / "vectors" / f"{key}.npy").is_file():
            return None
        return rec

    def vector(self, key: str) -> np.ndarray:
        return np.load(self.folder / "vectors" / f"{key}.npy", allow_pickle=False)

    def put(self, key: str, uid: str, result: Extracted | Exception, seconds: float) -> dict:
        rec = {"key": key, "utterance_id": uid, "seconds": round(seconds, 4), **_record(result)}
        if rec["status"] == "ok":
            atomic_save_npy(self.folder / "vectors" / f"{key}.npy",
                            np.asarray(result.vector, dtype=np.float32))
        self._log.write(json.dumps(rec) + "\n")
        self._log.flush()
        self.records[key] = rec
        return rec

    def close(self) -> None:
        self._log.close()


@dataclass
class ModalityResult:
    """One modality of every utterance: ``features`` (n, dim) float32, ``available`` (n,) bool,
    ``status`` (n,) ``ok`` / ``not given`` / ``absent: …`` / ``error: …``, ``info`` (n dicts),
    and how many were extracted now, in how many seconds (model loading apart)."""

    features: np.ndarray
    available: np.ndarray
    status: np.ndarray
    info: list[dict]
    extracted: int = 0
    seconds: float = 0.0

    def set(self, i: int, rec: dict, vector: np.ndarray | None = None) -> None:
        if rec["status"] == "ok":
            self.features[i] = vector
            self.available[i] = True
            self.status[i] = "ok"
        else:
            self.status[i] = f"{rec['status']}: {rec.get('reason', '')}"
        self.info[i] = rec.get("info") or {}


def extract_modality(ex: Extractor, items: Sequence[Utterance], cache_dir: Path | None = None,
                     progress: bool = False) -> ModalityResult:
    """Run one extractor over the utterances that give its modality.

    With ``cache_dir`` every finished utterance is logged there (and its vector saved) before
    the next, and utterances already done with the same input and extractor are read back.
    """
    m, n = ex.modality, len(items)
    res = ModalityResult(np.zeros((n, ex.dim), dtype=np.float32), np.zeros(n, dtype=bool),
                         np.array(["not given"] * n, dtype=object), [{} for _ in range(n)])
    cache = _Cache(cache_dir) if cache_dir is not None else None
    keys = [""] * n
    if cache is not None:
        # Keyed by the full provenance (every option, library versions, model hash): an
        # upgraded library or replaced weights re-extract instead of mixing old and new.
        prov = ex.provenance()
        prov = {**prov, "spec": "",   # (the options say it all; the spec holds the device too)
                "options": {k: v for k, v in prov["options"].items() if k != "device"}}
        ident = json.dumps(prov, sort_keys=True)
        keys = [_signature(it, m, ident) if given(it, m) else "" for it in items]
    todo = []
    for i, it in enumerate(items):
        if not given(it, m):
            continue
        rec = cache.done(keys[i]) if cache else None
        vec = None
        if rec is not None and rec["status"] == "ok":
            vec = cache.vector(keys[i])
            if vec.shape != (ex.dim,):   # a damaged entry is extracted again, never broadcast
                rec = None
        if rec is None:
            todo.append(i)
        else:
            res.set(i, rec, vec)

    def on_result(j, result, secs):
        i = todo[j]
        rec = (cache.put(keys[i], items[i].utterance_id, result, secs) if cache is not None
               else _record(result))
        res.set(i, rec, result.vector if rec["status"] == "ok" else None)

    if todo:
        ex.ensure_loaded()          # model loading is not part of the extraction rate
    t0 = time.perf_counter()
    try:
        if todo:
            run_extractor(ex, [items[i] for i in todo], on_result, progress)
    finally:
        if cache is not None:
            cache.close()
    res.seconds, res.extracted = time.perf_counter() - t0, len(todo)
    return res


def extract(source: str | Path | Manifest, out: str | Path | None = None, *,
            audio: str | Extractor | None = DEFAULTS["a"],
            text: str | Extractor | None = DEFAULTS["t"],
            video: str | Extractor | None = DEFAULTS["v"],
            task: str | None = None, classes: Sequence[str] | None = None,
            name: str | None = None, audio_from_video: bool = False,
            labels_from_folders: bool = False, progress: bool = True) -> ExtractionReport:
    """Extract features of every utterance of a manifest (or media folder) into a data set.

    Parameters
    ----------
    source : manifest file (CSV/TSV/JSONL), media folder, or a :class:`Manifest`
    out : output folder (the generic data set + its resume cache); None keeps everything in
        memory (no resume) and returns the data set in ``report.dataset``
    audio, text, video : extractor specs (``NAME[:key=value,...]``) or instances; ``None``
        skips the modality
    task : "classification" or "regression"; default: classification for non-numeric or
        integer labels, regression otherwise
    classes : class names in id order (default: sorted labels)
    audio_from_video : take the audio from the video's sound track when ``audio`` is empty

    Returns
    -------
    ExtractionReport (``dataset`` holds the MERDataset)
    """
    manifest = source if isinstance(source, Manifest) else read_manifest(source,
                                                                         labels_from_folders)
    extractors = resolve_extractors(audio, text, video)
    if not extractors:
        raise ValueError("no extractor chosen: give at least one of audio, text, video")
    table = manifest.table
    items = utterances_of(table, audio_from_video)
    out = Path(out) if out is not None else None
    if out is not None and out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out is not None and out.is_dir() and any(out.iterdir()) \
            and not (out / "extraction").is_dir():
        raise FileExistsError(f"{out} is not empty and was not made by `hardymer extract` "
                              "(no extraction/ folder); choose another --out")
    n = len(items)
    results = {m: extract_modality(ex, items, out / "extraction" / m if out else None, progress)
               for m, ex in extractors.items()}
    counts, errors = {}, []
    for m, r in results.items():
        counts[m] = {k: int(sum(str(st).startswith(k) for st in r.status))
                     for k in ("ok", "absent", "error", "not given")}
        for i in np.flatnonzero([str(st).startswith("error") for st in r.status]):
            errors.append({"utterance_id": items[i].utterance_id, "modality": m,
                           "file": str(items[i].audio if m == "a" else items[i].video
                                       if m == "v" else "(transcript)"),
                           "error": str(r.status[i])[len("error: "):]})
    errors = pd.DataFrame(errors, columns=["utterance_id", "modality", "file", "error"])
    dataset = _dataset(manifest, extractors, results, task, classes,
                       name or (out.name if out is not None else manifest.source.stem),
                       audio_from_video)
    if out is not None:
        write_extracted(dataset, out, errors)
    return ExtractionReport(out, n, counts, errors,
                            {m: r.seconds for m, r in results.items()},
                            {m: r.extracted for m, r in results.items()}, dataset)


def _record(result) -> dict:
    if isinstance(result, Exception):
        return {"status": "error", "reason": f"{type(result).__name__}: {result}"}
    if result.vector is None:
        return {"status": "absent", "reason": result.reason, "info": result.info}
    return {"status": "ok", "info": result.info}


def _labels(table: pd.DataFrame, task: str | None, classes, file) -> tuple:
    """(labels, task, class names); an unlabelled manifest gives (None, task, classes).

    Labels are class names (``happy``), class ids (``0, 1, …``; names from ``classes``) or, for
    regression, numbers. Without ``task``: integers and names are classes, other numbers are
    regression targets.
    """
    raw = table["label"]
    if (raw == "").all():
        return None, task or "classification", list(classes) if classes else None
    num = pd.to_numeric(raw, errors="coerce")
    numeric = not num.isna().any()
    integer = numeric and bool((num == np.round(num)).all())
    task = task or ("regression" if numeric and not integer else "classification")
    if task not in ("classification", "regression"):
        raise DataError(f"task {task!r}; expected classification or regression",
                        file=file, field="label")
    if task == "regression":
        if not numeric:
            bad = raw[num.isna()].iloc[0]
            raise DataError(f"label {bad!r}: a regression task needs numeric labels",
                            file=file, field="label")
        return num.to_numpy(np.float32), task, None
    names = [str(c) for c in classes] if classes else None
    if integer and names and not set(raw) <= set(names):
        ids = num.to_numpy().astype(np.int64)       # ids into the given class names
        if ids.min() < 0 or ids.max() >= len(names):
            raise DataError(f"class id {int(ids.min() if ids.min() < 0 else ids.max())}; "
                            f"expected ids in 0..{len(names) - 1} ({len(names)} classes)",
                            file=file, field="label")
        return ids, task, names
    if integer and not names:
        # Integer labels name the classes by value (1..5 ratings make 5 classes, not 6);
        # sentiment scores such as -3..3 usually want --task regression instead.
        values = np.sort(np.unique(num.to_numpy().astype(np.int64)))
        raw = num.astype(np.int64).astype(str)
        names = [str(v) for v in values]
    names = names or sorted(raw.unique())
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise DataError(f"label {unknown[0]!r} is not one of the classes {names}",
                        file=file, field="label")
    lookup = {c: i for i, c in enumerate(names)}
    return np.array([lookup[c] for c in raw], dtype=np.int64), task, names


def _dataset(manifest, extractors, results: dict[str, ModalityResult], task, classes, name,
             audio_from_video) -> MERDataset:
    table = manifest.table
    labels, task, names = _labels(table, task, classes, manifest.source)
    mods = tuple(extractors)
    utt = table[["utterance_id", "sequence_id", "speaker"]].copy()
    utt["position"] = utt.groupby("sequence_id", sort=False).cumcount()
    for c in ("audio", "video", "text", "start", "end"):
        utt[c] = table[c]
    for m in mods:
        utt[f"{COLUMN_OF[m]}_status"] = results[m].status
        for key in sorted({k for d in results[m].info for k in d}):
            utt[f"{COLUMN_OF[m]}_{key}"] = [d.get(key, np.nan) for d in results[m].info]
    for c in table.columns:
        if c not in utt and c != "label":
            utt[c] = table[c]
    meta = {"family": "generic", "labelled": labels is not None, "extraction": {
        "hardymer": __version__, "manifest": str(manifest.source),
        "audio_from_video": audio_from_video,
        "extractors": {m: ex.provenance() for m, ex in extractors.items()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}}
    return MERDataset(
        name=name, task=task, modalities=mods,
        features={m: results[m].features for m in mods},
        available=np.stack([results[m].available for m in mods], axis=1),
        labels=labels if labels is not None else np.zeros(len(table), np.int64),
        utterances=utt.reset_index(drop=True),
        class_names=tuple(names) if names else None, meta=meta)


def write_extracted(dataset: MERDataset, out: Path, errors: pd.DataFrame) -> None:
    """Write the data set files into ``out`` beside its ``extraction/`` cache.

    Each file is replaced by a rename (``dataset.json`` last), so the cache is never moved and
    a reader sees complete files. An unlabelled data set gets an empty ``label`` column, which
    the generic reader rejects with a message: features are there, training needs labels.
    """
    (out / "extraction").mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "extraction" / "errors.csv") as tmp:
        errors.to_csv(tmp, index=False)
    with scratch_folder(out) as tmp:
        write_contents(dataset, tmp)
        if not dataset.meta.get("labelled", True):
            table = pd.read_csv(tmp / "utterances.csv", dtype=str, keep_default_na=False)
            table["label"] = ""
            table.to_csv(tmp / "utterances.csv", index=False)
        for entry in sorted(tmp.iterdir(), key=lambda p: p.name == "dataset.json"):
            swap_into_place(entry, out / entry.name)
