"""Real media made on the spot, for the tests, the extractor benchmark and a first try.

Speech comes from ``espeak-ng`` (a Debian package: ``apt-get install espeak-ng``), faces from
``skimage.data.astronaut()`` (a photograph shipped with scikit-image), videos are encoded with
PyAV. Classes differ the way acted speech does: the words, the pitch and the speaking rate.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

# Words, espeak pitch (0-99) and rate (words/min) per class.
CLASSES = {
    "happy": (["I am so happy to see you today", "This is wonderful news",
               "What a great surprise, thank you", "I love it, it is perfect"], 75, 190),
    "sad": (["I feel so alone right now", "Nothing is going well for me",
             "I miss them every single day", "It is all over, there is no hope"], 25, 115),
    "angry": (["Stop it, I told you already", "This is completely unacceptable",
               "Get out of my way right now", "You never listen to me"], 55, 210),
}


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, path: str | Path, pitch: int = 50, rate: int = 160) -> Path:
    """Synthesise ``text`` to a wav file with espeak-ng."""
    if not espeak_available():
        raise RuntimeError("espeak-ng is not installed (Debian/Ubuntu: apt-get install "
                           "espeak-ng)")
    subprocess.run(["espeak-ng", "-p", str(pitch), "-s", str(rate), "-w", str(path), text],
                   check=True, capture_output=True)
    return Path(path)


def face_image(size: int = 192) -> np.ndarray:
    """The astronaut's face (RGB uint8, size x size)."""
    import cv2  # the [extract] and [test] extras, loaded only to make demo media
    from skimage.data import astronaut
    face = astronaut()[10:250, 100:340]
    return cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA)


def write_video(path: str | Path, frames: list[np.ndarray], fps: int = 10,
                audio: np.ndarray | None = None, sample_rate: int = 16000) -> Path:
    """Encode RGB frames (and an optional mono float audio track) as MPEG-4 in an .mp4."""
    import av  # the [extract] extra, loaded only to make demo media
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        vs = out.add_stream("mpeg4", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        astream = None
        if audio is not None:
            astream = out.add_stream("aac", rate=sample_rate)
            astream.layout = "mono"
        for f in frames:
            for pkt in vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f),
                                                            format="rgb24")):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        if astream is not None:
            pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)[None]
            frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
            frame.sample_rate = sample_rate
            for pkt in astream.encode(frame):
                out.mux(pkt)
            for pkt in astream.encode(None):
                out.mux(pkt)
    return Path(path)


def face_frames(n: int, size: int = 192, seed: int = 0, face: bool = True) -> list[np.ndarray]:
    """``n`` frames: the face moving by a few pixels (or a blank grey picture with noise)."""
    rng = np.random.default_rng(seed)
    base = face_image(size) if face else np.full((size, size, 3), 128, np.uint8)
    frames = []
    for _ in range(n):
        dx, dy = rng.integers(-4, 5, size=2)
        f = np.roll(base, (int(dy), int(dx)), axis=(0, 1))
        noise = rng.integers(-3, 4, size=f.shape)
        frames.append(np.clip(f.astype(np.int16) + noise, 0, 255).astype(np.uint8))
    return frames


def make_demo_media(folder: str | Path, per_class: int = 4,
                    classes: tuple[str, ...] = ("happy", "sad"), video: bool = True,
                    seconds: float = 1.0, fps: int = 10, seed: int = 0) -> Path:
    """Write speech, transcripts and face videos of ``per_class`` utterances per class, and a
    manifest ``folder/manifest.csv`` (one dialogue per class pair turn); returns its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for c_i, c in enumerate(classes):
        texts, pitch, rate = CLASSES[c]
        for i in range(per_class):
            uid = f"{c}_{i:02d}"
            text = texts[i % len(texts)]
            speak(text, folder / f"{uid}.wav", pitch=pitch + 3 * (i % 3), rate=rate)
            vid = ""
            if video:
                write_video(folder / f"{uid}.mp4",
                            face_frames(int(seconds * fps), seed=seed + 100 * c_i + i), fps)
                vid = f"{uid}.mp4"
            rows.append({"utterance_id": uid, "sequence_id": f"dialogue{i:02d}",
                         "speaker": f"S{c_i}", "audio": f"{uid}.wav", "video": vid,
                         "text": text, "label": c})
    manifest = folder / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest
