"""openSMILE functionals of an utterance's audio (the `opensmile` package, offline).

eGeMAPSv02 (88 functionals of the extended Geneva minimalistic set, Eyben et al. 2016) by
default; ComParE_2016 (6,373) by option. The audio is decoded with PyAV (any FFmpeg format,
the audio track of a video included), mixed to mono and resampled to ``sample_rate``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..media import MediaError, load_audio
from .base import Extracted, Extractor, ExtractorError, Utterance, package_version, \
    register_extractor

FEATURE_SETS = {"eGeMAPSv02": 88, "ComParE_2016": 6373, "GeMAPSv01b": 62, "eGeMAPSv01b": 88}


@dataclass
class OpenSmileOptions:
    feature_set: str = "eGeMAPSv02"
    sample_rate: int = 16000
    min_seconds: float = 0.1          # shorter audio counts as absent, not as a vector


@register_extractor("opensmile")
class OpenSmileExtractor(Extractor):
    """Audio -> openSMILE functionals, (dim,) float32 (88 for eGeMAPSv02)."""

    modality = "a"
    Options = OpenSmileOptions

    def __init__(self, **options):
        super().__init__(**options)
        if self.options.feature_set not in FEATURE_SETS:
            raise ExtractorError(f"opensmile: feature_set={self.options.feature_set!r}; "
                                 f"expected one of {sorted(FEATURE_SETS)}")

    @property
    def dim(self) -> int:
        return FEATURE_SETS[self.options.feature_set]

    def load(self) -> None:
        try:
            import opensmile
        except ImportError as err:
            raise ExtractorError("the opensmile extractor needs the `opensmile` package: "
                                 "pip install 'hardymer[extract]'") from err
        self._smile = opensmile.Smile(
            feature_set=getattr(opensmile.FeatureSet, self.options.feature_set),
            feature_level=opensmile.FeatureLevel.Functionals)
        self.feature_names = list(self._smile.feature_names)

    def versions(self) -> dict[str, str]:
        return {"opensmile": package_version("opensmile"), "av": package_version("av")}

    def extract_one(self, item: Utterance) -> Extracted:
        signal = load_audio(item.audio, self.options.sample_rate, item.start, item.end)
        seconds = len(signal) / self.options.sample_rate
        info = {"seconds": round(seconds, 3)}
        if seconds < self.options.min_seconds:
            return Extracted(None, f"only {seconds:.3f} s of audio (< min_seconds="
                                   f"{self.options.min_seconds})", info)
        feats = self._smile.process_signal(signal, self.options.sample_rate)
        vector = feats.to_numpy(dtype=np.float32).reshape(-1)
        if vector.shape != (self.dim,) or not np.isfinite(vector).all():
            raise MediaError(f"{item.audio}: openSMILE returned {vector.shape} values, "
                             f"{int((~np.isfinite(vector)).sum())} not finite")
        return Extracted(vector, info=info)
