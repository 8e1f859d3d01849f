"""The GCNet-style extractors (wav2vec 2.0, DeBERTa, a face-expression network), as optional
plug-ins that load a Hugging Face ``transformers`` model **from a local folder** the user
gives (``path=``); nothing is downloaded.

* ``wav2vec``  — audio: ``AutoFeatureExtractor`` + ``AutoModel`` (wav2vec 2.0, HuBERT, …),
  hidden states of ``layer`` (default the last) mean-pooled over time.
* ``deberta``  — text: ``AutoTokenizer`` + ``AutoModel`` (DeBERTa, RoBERTa, BERT, …), hidden
  states of ``layer`` mean-pooled over the real tokens.
* ``face-cnn`` — video: faces cropped with Face Mesh (box of the landmarks plus a margin),
  ``AutoImageProcessor`` + ``AutoModel`` (ViT, ResNet, ConvNeXt, …); the pooled output (or the
  token mean) averaged over the frames with a face. No face in any frame -> video absent.

GCNet's own choices (``layer`` = a middle layer, per-frame features kept as sequences) are
options or out of scope: the toolkit's models read one vector per utterance.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..media import load_audio
from .base import Extracted, Extractor, ExtractorError, TranscriptBatches, Utterance, \
    file_digest, package_version, register_extractor, resolve_device
from .video import FaceMeshOptions, FaceTracker, face_result

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class LocalModelExtractor(Extractor):
    """Shared part: the folder check, the config, the versions, the pooling."""

    def folder(self) -> Path:
        if not self.options.path:
            raise ExtractorError(f"extractor {self.name!r} loads a local model: give its folder "
                                 f"as {self.name}:path=/path/to/model (a save_pretrained "
                                 "folder; nothing is downloaded)")
        path = Path(self.options.path).expanduser()
        if not (path / "config.json").is_file():
            raise ExtractorError(f"{path}: expected a transformers model folder with "
                                 "config.json (made by save_pretrained)")
        return path

    def config(self) -> dict:
        return json.loads((self.folder() / "config.json").read_text())

    @property
    def dim(self) -> int:
        c = self.config()
        if "hidden_size" in c:
            return int(c["hidden_size"])
        if c.get("hidden_sizes"):
            return int(c["hidden_sizes"][-1])
        raise ExtractorError(f"{self.folder()}/config.json: no hidden_size or hidden_sizes; "
                             "cannot tell the output dimension")

    def _model(self):
        self._device = resolve_device(self.options.device)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
        model = AutoModel.from_pretrained(str(self.folder()), local_files_only=True)
        self._torch = torch
        return model.eval().to(self._device)

    def versions(self) -> dict[str, str]:
        weights = [self.folder() / f for f in WEIGHT_FILES if (self.folder() / f).is_file()]
        return {"transformers": package_version("transformers"),
                "model_type": str(self.config().get("model_type", "")),
                "model_sha256": file_digest(weights[0]) if weights else ""}

    def _hidden(self, outputs):
        """Hidden states (B, T, D) of the chosen layer."""
        if self.options.layer == -1 or not getattr(outputs, "hidden_states", None):
            return outputs.last_hidden_state
        return outputs.hidden_states[self.options.layer]


@dataclass
class LocalModelOptions:
    path: str = ""                    # the save_pretrained folder (required)
    layer: int = -1                   # hidden states of this layer; -1 the last
    device: str = "auto"              # "auto": CUDA when available


@dataclass
class Wav2VecOptions(LocalModelOptions):
    max_seconds: float = 30.0


@register_extractor("wav2vec")
class Wav2VecExtractor(LocalModelExtractor):
    """Audio -> (hidden,) mean-pooled hidden states of a local wav2vec-style model."""

    modality = "a"
    Options = Wav2VecOptions

    def load(self) -> None:
        from transformers import AutoFeatureExtractor
        self._fe = AutoFeatureExtractor.from_pretrained(str(self.folder()), local_files_only=True)
        self._net = self._model()

    def extract_one(self, item: Utterance) -> Extracted:
        sr = int(self._fe.sampling_rate)
        signal = load_audio(item.audio, sr, item.start, item.end)
        signal = signal[: int(self.options.max_seconds * sr)]
        if len(signal) < sr // 10:
            return Extracted(None, f"only {len(signal) / sr:.3f} s of audio")
        inputs = self._fe(signal, sampling_rate=sr, return_tensors="pt")
        with self._torch.no_grad():
            out = self._net(**{k: v.to(self._device) for k, v in inputs.items()},
                            output_hidden_states=self.options.layer != -1)
        vec = self._hidden(out)[0].mean(0).float().cpu().numpy()
        return Extracted(vec.astype(np.float32), info={"seconds": round(len(signal) / sr, 3)})


@dataclass
class DebertaOptions(LocalModelOptions):
    max_length: int = 256


@register_extractor("deberta")
class DebertaExtractor(TranscriptBatches, LocalModelExtractor):
    """Transcript -> (hidden,) masked mean of a local text encoder's hidden states."""

    modality = "t"
    Options = DebertaOptions
    batch_size = 32

    def load(self) -> None:
        from transformers import AutoTokenizer
        self._tok = AutoTokenizer.from_pretrained(str(self.folder()), local_files_only=True)
        self._net = self._model()

    def encode(self, texts: list[str]) -> np.ndarray:
        enc = self._tok(texts, padding=True, truncation=True, max_length=self.options.max_length,
                        return_tensors="pt")
        enc = {k: v.to(self._device) for k, v in enc.items()}
        with self._torch.no_grad():
            hidden = self._hidden(self._net(**enc, output_hidden_states=self.options.layer != -1))
        mask = enc["attention_mask"][..., None].to(hidden.dtype)
        return ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float().cpu().numpy()


@dataclass
class FaceCNNOptions(LocalModelOptions):
    fps: float = 5.0
    max_frames: int = 300
    margin: float = 0.2               # box of the landmarks grown by this fraction per side


@register_extractor("face-cnn")
class FaceCNNExtractor(LocalModelExtractor):
    """Video -> (hidden,) image-model embedding of the face crops, mean over frames."""

    modality = "v"
    Options = FaceCNNOptions

    def load(self) -> None:
        from transformers import AutoImageProcessor
        try:  # the PIL backend: torchvision does not work beside this torch build
            self._proc = AutoImageProcessor.from_pretrained(
                str(self.folder()), local_files_only=True, backend="pil")
        except (TypeError, ValueError):  # transformers < 5
            self._proc = AutoImageProcessor.from_pretrained(
                str(self.folder()), local_files_only=True, use_fast=False)
        self._net = self._model()
        self._tracker = FaceTracker(FaceMeshOptions(refine=False))

    def crop(self, frame: np.ndarray, pts: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        (x0, y0), (x1, y1) = pts[:, :2].min(0), pts[:, :2].max(0)
        mx, my = (x1 - x0) * self.options.margin, (y1 - y0) * self.options.margin
        a, b = int(max(0, y0 - my)), int(min(h, y1 + my + 1))
        c, d = int(max(0, x0 - mx)), int(min(w, x1 + mx + 1))
        return frame[a:b, c:d]

    def extract_one(self, item: Utterance) -> Extracted:
        o = self.options
        faces, n = self._tracker.faces(item, o.fps, o.max_frames)
        crops = [c for c in (self.crop(frame, pts) for frame, pts in faces) if c.size]
        return face_result(crops, n, self._embed)

    def _embed(self, crops: list[np.ndarray]) -> np.ndarray:
        """(hidden,) mean over the crops of the image model's pooled output."""
        o = self.options
        inputs = self._proc(images=crops, return_tensors="pt")
        with self._torch.no_grad():
            out = self._net(pixel_values=inputs["pixel_values"].to(self._device),
                            output_hidden_states=o.layer != -1)
        pooled = getattr(out, "pooler_output", None)
        if o.layer != -1 or pooled is None:
            hidden = self._hidden(out)
            per_frame = hidden.flatten(2).mean(-1) if hidden.dim() == 4 else hidden.mean(1)
        else:
            per_frame = pooled.flatten(1)
        return per_frame.mean(0).float().cpu().numpy()
