"""Decoding media into arrays: audio with PyAV (FFmpeg), video frames with OpenCV.

Audio comes out mono float32 at a fixed sample rate, from any container FFmpeg reads (wav,
flac, mp3, ogg, and the audio track of mp4/mkv/avi…). Video comes out as RGB uint8 frames,
optionally subsampled to at most ``fps`` frames per second. Both honour an utterance's
``start``/``end`` seconds inside a longer recording.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np


class MediaError(RuntimeError):
    """A media file cannot be decoded as asked (message names the file and the problem)."""


class NoStream(MediaError):
    """The file decodes but has no stream of the kind asked for (a silent video read as
    audio): the modality is absent from the recording, not a failure. ``reason`` says so."""

    reason = "no audio stream in the file"


def load_audio(path: str | Path, sample_rate: int = 16000, start: float | None = None,
               end: float | None = None) -> np.ndarray:
    """Decode the first audio stream of ``path`` to mono float32 in [-1, 1].

    Parameters
    ----------
    path : an audio file or a video file with an audio track
    sample_rate : Hz of the output (resampled by FFmpeg's resampler)
    start, end : seconds into the file; None = from the beginning / to the end

    Returns
    -------
    ndarray (n_samples,) float32
    """
    import av  # PyAV (FFmpeg): the [extract] extra, loaded on first decode
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: file not found")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as err:
        raise MediaError(f"{path}: cannot open as media ({err})") from err
    with container:
        if not container.streams.audio:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise NoStream(f"{path}: no audio stream (streams: {', '.join(kinds)})")
        stream = container.streams.audio[0]
        if start:
            # Seek to the keyframe at or before ``start``; samples before it are cut below.
            container.seek(int(start / stream.time_base), stream=stream, backward=True,
                           any_frame=False)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        parts, t0 = [], None
        try:
            for frame in container.decode(stream):
                if t0 is None:
                    t0 = float(frame.time) if frame.time is not None else 0.0
                if end is not None and frame.time is not None and frame.time > end:
                    break
                parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
            parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
        except av.error.FFmpegError as err:
            raise MediaError(f"{path}: audio decoding failed ({err})") from err
    signal = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
    t0 = t0 or 0.0
    a = max(0, int(round(((start or 0.0) - t0) * sample_rate)))
    b = len(signal) if end is None else max(a, int(round((end - t0) * sample_rate)))
    return signal[a:b]


def video_frames(path: str | Path, fps: float | None = None, start: float | None = None,
                 end: float | None = None, max_frames: int | None = None
                 ) -> Iterator[np.ndarray]:
    """RGB frames (height, width, 3) uint8 of ``path``.

    ``fps`` keeps at most that many frames per second of video (by timestamp, so the choice
    does not depend on the file's frame rate); ``max_frames`` stops early.
    """
    import cv2  # OpenCV: the [extract] extra, loaded on first use
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: file not found")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise MediaError(f"{path}: OpenCV cannot open it as a video")
    try:
        rate = cap.get(cv2.CAP_PROP_FPS) or 25.0
        if start:
            cap.set(cv2.CAP_PROP_POS_MSEC, start * 1000.0)
        step = 1.0 / fps if fps else 0.0
        next_t, kept, i = (start or 0.0), 0, 0
        first = True
        while max_frames is None or kept < max_frames:
            ok, bgr = cap.read()
            if not ok:
                if first:
                    raise MediaError(f"{path}: no frame could be decoded")
                break
            first = False
            t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if t <= 0 and i > 0:  # some containers report no timestamps
                t = (start or 0.0) + i / rate
            i += 1
            if end is not None and t > end:
                break
            if t + 1e-6 < next_t:
                continue
            next_t = t + step
            kept += 1
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()
