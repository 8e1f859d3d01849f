"""Real text from the user's own label pickle: ``hardymer convert ROOT --text minilm``.

The GCNet/MoMKE label pickles hold every utterance's transcript (``videoSentence(s)``). This
embeds them with a text extractor (default the packaged MiniLM, no network) as the text
modality, and keeps the audio/video features the user has beside the pickle (a modality whose
feature folder is absent is left out). Dialogues, speakers, sessions and splits are those of
the pickle. Nothing derived from the corpus ships with hardymer: the set is built from the
user's files on the user's machine.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.dataset import MERDataset
from ..data.generic import write_generic
from ..data.reference import (FEATURE_DIRS, MODALITIES, find_label_file, read_reference)
from ..data.validate import DataError, without_empty_utterances
from .extractors import create_extractor


def embed_transcripts(dataset: MERDataset, spec: str = "minilm", progress: bool = True
                      ) -> MERDataset:
    """``dataset`` with its ``transcript`` column embedded as the text modality ``t``
    (inserted in a, t, v order; absent where the transcript is empty)."""
    if "transcript" not in dataset.utterances:
        raise DataError("no transcript column; read the pickle with transcripts=True",
                        field="transcript")
    ex = create_extractor(spec, "t").ensure_loaded()
    texts = dataset.utterances["transcript"].fillna("").astype(str).str.strip().tolist()
    keep = [i for i, t in enumerate(texts) if t]
    out = np.zeros((len(texts), ex.dim), np.float32)
    step = max(1, ex.batch_size)
    for a in tqdm(range(0, len(keep), step), desc=f"embedding transcripts ({ex.name})",
                  unit="batch", disable=not progress):
        rows = keep[a:a + step]
        out[rows] = np.asarray(ex.encode([texts[i] for i in rows]), np.float32)
    have = np.zeros(len(texts), bool)
    have[keep] = True
    mods = tuple(m for m in MODALITIES if m in dataset.modalities or m == "t")
    features = {**dataset.features, "t": out}
    columns = {m: dataset.available[:, dataset.modalities.index(m)] for m in dataset.modalities}
    columns["t"] = have
    meta = {**dataset.meta, "text": {"from": "transcripts in the label pickle",
                                     "extractor": ex.provenance()}}
    meta.get("feature_dirs", {}).pop("t", None)
    return replace(dataset, modalities=mods, features={m: features[m] for m in mods},
                   available=np.stack([columns[m] for m in mods], 1), meta=meta)


def convert_with_text(src_root: str | Path, out_path: str | Path, kind: str = "auto",
                      allow_pickle: bool = False, text: str = "minilm",
                      missing_ok: bool = False, overwrite: bool = False,
                      progress: bool = True) -> MERDataset:
    """Label pickle + its transcripts (+ the audio/video folders present) -> a generic folder."""
    out_path = Path(out_path)
    if out_path.exists() and not overwrite and not (out_path.is_dir()
                                                    and not any(out_path.iterdir())):
        raise FileExistsError(f"{out_path} already exists and is not empty; pass overwrite=True "
                              "(--overwrite) to replace it")
    label_file, kind = find_label_file(Path(src_root).expanduser(), kind)
    base = label_file.parent
    found = tuple(m for m in ("a", "v") if any(
        (d / FEATURE_DIRS[m]).is_dir() for d in (base, base / "features")))
    dataset = read_reference(label_file, kind, allow_pickle=allow_pickle, progress=progress,
                             missing_ok=missing_ok, transcripts=True, modalities=found)
    dataset = without_empty_utterances(embed_transcripts(dataset, text, progress), label_file)
    write_generic(dataset, out_path, overwrite=overwrite)
    return dataset
