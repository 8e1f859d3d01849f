"""Feature extractors, one file per kind, behind one registry (``create_extractor(spec)``)."""
from .base import (DEFAULTS, MODALITIES, Extracted, Extractor, ExtractorError,
                   TranscriptBatches, Utterance, create_extractor, list_extractors, parse_spec,
                   register_extractor)

__all__ = ["DEFAULTS", "MODALITIES", "Extracted", "Extractor", "ExtractorError",
           "TranscriptBatches", "Utterance",
           "create_extractor", "list_extractors", "parse_spec", "register_extractor"]
