"""One interface for every feature extractor, and the registry that names them.

An extractor turns one modality of an utterance (a media file or a transcript) into one
fixed-size vector. It is chosen by a spec string ``NAME[:key=value,...]`` (for example
``opensmile:feature_set=ComParE_2016`` or ``wav2vec:path=/models/w2v``), knows its output
dimension before it runs, and describes itself in :meth:`Extractor.provenance`, which is written
into the extracted data set so that a trained run can rebuild the same extractors later.

Adding an extractor is adding one class with ``@register_extractor("name")``.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
from importlib.metadata import PackageNotFoundError, version
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from ...registry import Registry

MODALITIES = {"a": "audio", "t": "text", "v": "video"}


@dataclass
class Utterance:
    """What the extractors read of one manifest row; ``None`` = not given."""

    utterance_id: str
    audio: Path | None = None
    video: Path | None = None
    text: str | None = None
    start: float | None = None
    end: float | None = None


@dataclass
class Extracted:
    """One extractor's result for one utterance.

    ``vector`` (dim,) float32, or None when the modality turned out to be absent (no face in
    any frame, an empty transcript) with ``reason`` saying why; ``info`` carries counts worth
    keeping (frames read, frames with a face, seconds of audio).
    """

    vector: np.ndarray | None
    reason: str = ""
    info: dict = field(default_factory=dict)


class ExtractorError(ValueError):
    """A bad extractor spec or option (message says what is accepted)."""


class Extractor:
    """Base class. Subclasses set ``modality``, ``Options`` (a dataclass) and implement
    :attr:`dim`, :meth:`load` and :meth:`extract_one` (or :meth:`extract_batch`)."""

    name: ClassVar[str]
    modality: ClassVar[str]                      # "a", "t" or "v"
    Options: ClassVar[type]
    batch_size: ClassVar[int] = 1                # >1: extract_batch gets that many at once

    def __init__(self, **options: Any):
        known = {f.name: f for f in fields(self.Options)}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ExtractorError(f"extractor {self.name!r}: unknown option(s) {unknown}; "
                                 f"options: {sorted(known) or 'none'}")
        self.options = self.Options(**{k: _coerce(known[k], v) for k, v in options.items()})
        if getattr(self.options, "path", ""):
            # Stored in the data set's provenance: make it work from any working directory.
            self.options.path = str(Path(self.options.path).expanduser().resolve())
        self._loaded = False
        self._provenance: dict | None = None

    # --- to implement --------------------------------------------------------------------
    @property
    def dim(self) -> int:
        raise NotImplementedError

    def load(self) -> None:
        """Load models (called once, lazily, before the first extraction)."""

    def extract_one(self, item: Utterance) -> Extracted:
        raise NotImplementedError

    def extract_batch(self, items: Sequence[Utterance]) -> list[Extracted]:
        return [self.extract_one(it) for it in items]

    def versions(self) -> dict[str, str]:
        """Versions of the libraries (and model files) the output depends on."""
        return {}

    # --- common ----------------------------------------------------------------------------
    def ensure_loaded(self) -> "Extractor":
        if not self._loaded:
            self.load()
            self._loaded = True
        return self

    def __call__(self, items: Sequence[Utterance]) -> list[Extracted]:
        return self.ensure_loaded().extract_batch(items)

    @property
    def spec(self) -> str:
        """The spec string that rebuilds this extractor (non-default options only)."""
        default = self.Options()
        opts = [f"{f.name}={getattr(self.options, f.name)}" for f in fields(self.Options)
                if getattr(self.options, f.name) != getattr(default, f.name)]
        return self.name + (":" + ",".join(opts) if opts else "")

    def provenance(self) -> dict:
        """Name, modality, dim, options, library and model versions: written to dataset.json.
        Computed once (it hashes model weights); a copy is returned."""
        if self._provenance is None:
            self._provenance = {"name": self.name, "spec": self.spec, "modality": self.modality,
                                "dim": self.dim, "options": dataclasses.asdict(self.options),
                                "versions": self.versions()}
        return copy.deepcopy(self._provenance)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r}, dim={self.dim})"


class TranscriptBatches:
    """Mixin of the text extractors: transcripts go in batches through :meth:`encode`; an
    empty one is absent."""

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) vectors of non-empty transcripts."""
        raise NotImplementedError

    def extract_batch(self, items: Sequence[Utterance]) -> list[Extracted]:
        texts = [(it.text or "").strip() for it in items]
        keep = [i for i, t in enumerate(texts) if t]
        out = [Extracted(None, "empty transcript") for _ in items]
        if keep:
            vecs = np.asarray(self.encode([texts[i] for i in keep]), dtype=np.float32)
            for i, v in zip(keep, vecs):
                out[i] = Extracted(v, info={"characters": len(texts[i])})
        return out

    def extract_one(self, item: Utterance) -> Extracted:
        return self.extract_batch([item])[0]


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    """Options arrive as strings from the command line: convert to the field's type."""
    if not isinstance(value, str):
        return value
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
    try:
        if kind.startswith("bool"):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        if kind.startswith("int"):
            return int(value)
        if kind.startswith("float"):
            return float(value)
        if value.lower() == "none" and "None" in kind:
            return None
    except ValueError:
        raise ExtractorError(f"option {f.name}={value!r}: expected {kind}") from None
    return value


def resolve_device(name: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; other names pass."""
    if name != "auto":
        return name
    import torch  # only when a device is asked for: openSMILE-only extraction never loads it
    return "cuda" if torch.cuda.is_available() else "cpu"


def file_digest(path: str | Path, limit: int | None = None) -> str:
    """sha256 of a file (its first ``limit`` bytes when given): pins model weights."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        remaining = limit
        while chunk := fh.read(1 << 20 if remaining is None else min(1 << 20, remaining)):
            h.update(chunk)
            if remaining is not None:
                remaining -= len(chunk)
                if remaining <= 0:
                    break
    return h.hexdigest()


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


# --- registry --------------------------------------------------------------------------------

EXTRACTORS: Registry[type[Extractor]] = Registry("extractor", "name")
register_extractor = EXTRACTORS.register
DEFAULTS = {"a": "opensmile", "t": "minilm", "v": "facemesh"}


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"name:key=value,key=value"`` -> (name, {key: value})."""
    name, _, rest = spec.strip().partition(":")
    options = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise ExtractorError(f"extractor spec {spec!r}: expected NAME[:key=value,...], "
                                 f"got the option {part!r}")
        options[key.strip()] = value.strip()
    return name, options
