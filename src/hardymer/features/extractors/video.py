"""Face-expression descriptor from MediaPipe Face Mesh landmarks (offline; model in the wheel).

Per frame (OpenCV decodes, at most ``fps`` frames per second), Face Mesh gives 478 landmarks
(468 + 10 iris points with ``refine=true``). Each frame's landmarks are made independent of
where the face is, how large it is and how the head is tilted in the image plane::

    p  = (x W, y H, z W)                 # pixels; z on the x scale, as MediaPipe defines it
    p -= mean(p)                         # translation
    p  = R(-roll) p                      # roll: angle of the line between the outer eye corners
    p /= ||eye_l - eye_r||               # scale: inter-ocular distance

and the utterance descriptor is the mean and the standard deviation over the frames with a face
of the flattened coordinates: ``2 * 478 * 3 = 2868`` values. Frames without a face are counted
(``info``); an utterance in which no frame has a face has its video *absent*.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..media import video_frames
from .base import (Extracted, Extractor, ExtractorError, Utterance, package_version,
                   register_extractor)

# Face Mesh indices of the outer eye corners (subject's right, left).
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263


@dataclass
class FaceMeshOptions:
    fps: float = 5.0                  # frames per second of video analysed (0 = every frame)
    max_frames: int = 300             # per utterance
    refine: bool = True               # 478 landmarks (iris) instead of 468
    min_confidence: float = 0.5       # face detection confidence


def _import_mediapipe():
    """MediaPipe, imported on first use (heavy: TensorFlow Lite, protobuf)."""
    os.environ.setdefault("GLOG_minloglevel", "2")       # MediaPipe's C++ log: errors only
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                 # protobuf deprecation notices
            import mediapipe as mp
        warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype",
                                category=UserWarning)
        return mp.solutions.face_mesh
    except (ImportError, AttributeError) as err:
        raise ExtractorError("the facemesh extractor needs mediapipe 0.10.14 (its Face Mesh "
                             "solution carries the model): pip install 'hardymer[face]'"
                             ) from err


class FaceTracker:
    """Face Mesh over the frames of one video (a fresh tracker per video: deterministic)."""

    def __init__(self, options: FaceMeshOptions):
        self.options = options
        self._mesh = _import_mediapipe()

    def landmarks(self, frames) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """(frame, landmarks (L, 3) in pixels or None) for each frame."""
        with self._mesh.FaceMesh(static_image_mode=False, max_num_faces=1,
                                 refine_landmarks=self.options.refine,
                                 min_detection_confidence=self.options.min_confidence) as mesh:
            for frame in frames:
                result = mesh.process(np.ascontiguousarray(frame))
                if not result.multi_face_landmarks:
                    yield frame, None
                    continue
                h, w = frame.shape[:2]
                lm = result.multi_face_landmarks[0].landmark
                pts = np.array([(p.x * w, p.y * h, p.z * w) for p in lm], dtype=np.float64)
                yield frame, pts

    def faces(self, item: Utterance, fps: float, max_frames: int
              ) -> tuple[list[tuple[np.ndarray, np.ndarray]], int]:
        """(frame, landmarks) of the analysed frames of ``item.video`` that show a face (at
        most ``fps`` per second, 0 = all; ``max_frames``), and how many frames were analysed."""
        frames = video_frames(item.video, fps=fps or None, start=item.start, end=item.end,
                              max_frames=max_frames)
        faces, n = [], 0
        for frame, pts in self.landmarks(frames):
            n += 1
            if pts is not None:
                faces.append((frame, pts))
        return faces, n


def face_result(vectors: list[np.ndarray], n_frames: int, reduce) -> Extracted:
    """``reduce(stacked per-frame vectors)`` with the frame counts; no face -> video absent."""
    info = {"frames": n_frames, "face_frames": len(vectors)}
    if not vectors:
        return Extracted(None, f"no face in {n_frames} frame(s)", info)
    return Extracted(np.asarray(reduce(vectors), dtype=np.float32), info=info)


def normalise_landmarks(points: np.ndarray) -> np.ndarray:
    """(L, 3) pixel landmarks -> (L, 3) centred, roll-corrected, inter-ocular-scaled."""
    p = points - points.mean(axis=0)
    d = p[LEFT_EYE_OUTER, :2] - p[RIGHT_EYE_OUTER, :2]
    angle = np.arctan2(d[1], d[0])
    c, s = np.cos(-angle), np.sin(-angle)
    xy = p[:, :2] @ np.array([[c, s], [-s, c]])
    scale = float(np.hypot(*d)) or 1.0
    return np.column_stack([xy, p[:, 2]]) / scale


@register_extractor("facemesh")
class FaceMeshExtractor(Extractor):
    """Video -> (2 * L * 3,) float32 landmark-geometry statistics; no face -> absent."""

    modality = "v"
    Options = FaceMeshOptions

    @property
    def n_landmarks(self) -> int:
        return 478 if self.options.refine else 468

    @property
    def dim(self) -> int:
        return 2 * self.n_landmarks * 3

    def load(self) -> None:
        _import_mediapipe()

    def versions(self) -> dict[str, str]:
        return {"mediapipe": package_version("mediapipe"),
                "opencv": package_version("opencv-contrib-python")}

    def extract_one(self, item: Utterance) -> Extracted:
        o = self.options
        faces, n = FaceTracker(o).faces(item, o.fps, o.max_frames)
        shapes = [normalise_landmarks(pts).reshape(-1) for _, pts in faces]
        return face_result(shapes, n, lambda v: np.concatenate([np.mean(v, 0), np.std(v, 0)]))
