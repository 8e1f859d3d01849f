"""Feature extractors, one file per kind, behind one registry (``create_extractor(spec)``).

Importing this package imports every module in it, so the lookups below see every extractor
and adding one is adding a file. Extractors import their heavy libraries on first use.
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import (DEFAULTS, EXTRACTORS, MODALITIES, Extracted, Extractor, ExtractorError,
                    TranscriptBatches, Utterance, parse_spec, register_extractor)

for _module in pkgutil.iter_modules(__path__):  # each file registers its extractors
    importlib.import_module(f"{__name__}.{_module.name}")


def list_extractors(modality: str | None = None) -> dict[str, type[Extractor]]:
    return {n: c for n, c in EXTRACTORS if modality is None or c.modality == modality}


def create_extractor(spec: str, modality: str | None = None) -> Extractor:
    """Build an extractor from its spec; ``modality`` checks it extracts that modality."""
    name, options = parse_spec(spec)
    if name not in EXTRACTORS:
        known = ", ".join(f"{n} ({MODALITIES[c.modality]})" for n, c in EXTRACTORS)
        raise ExtractorError(f"unknown extractor {name!r}; registered: {known}")
    cls = EXTRACTORS.get(name)
    if modality is not None and cls.modality != modality:
        raise ExtractorError(f"extractor {name!r} extracts {MODALITIES[cls.modality]}, not "
                             f"{MODALITIES[modality]}")
    return cls(**options)


__all__ = ["DEFAULTS", "EXTRACTORS", "MODALITIES", "Extracted", "Extractor", "ExtractorError",
           "TranscriptBatches", "Utterance", "create_extractor", "list_extractors",
           "parse_spec", "register_extractor"]
