"""Real media for the extraction and prediction tests (espeak-ng speech, astronaut face video)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from hardymer.features.demo_media import (espeak_available, face_frames, make_demo_media,
                                          speak, write_video)

needs_espeak = pytest.mark.skipif(
    not espeak_available(),
    reason="espeak-ng is not installed (Debian/Ubuntu: apt-get install espeak-ng; .ci/run "
           "installs it): the real-speech tests need it")
needs_mediapipe = pytest.mark.skipif(
    importlib.util.find_spec("mediapipe") is None,
    reason="mediapipe is not installed (pip install 'hardymer[face]')")


def build_media(folder: Path) -> Path:
    """Six labelled utterances in three dialogues, plus the edge cases, and a manifest.

    Extra rows: ``blank`` (a video with no face), ``track`` (audio only as the sound track of
    its video), ``gone`` (an audio file that does not exist), ``silent_text`` (empty
    transcript, audio only).
    """
    manifest = make_demo_media(folder, per_class=3, classes=("happy", "sad"), seconds=0.8)
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    speak("I am not sure what to think", folder / "blank.wav", pitch=50, rate=150)
    write_video(folder / "blank.mp4", face_frames(8, face=False))
    import numpy as np
    from hardymer.features.media import load_audio
    speech = load_audio(folder / "happy_00.wav")
    write_video(folder / "track.mp4", face_frames(8, seed=7), audio=speech)
    extra = pd.DataFrame([
        {"utterance_id": "blank", "sequence_id": "dialogue03", "speaker": "S0",
         "audio": "blank.wav", "video": "blank.mp4", "text": "I am not sure", "label": "sad"},
        {"utterance_id": "track", "sequence_id": "dialogue03", "speaker": "S1", "audio": "",
         "video": "track.mp4", "text": "I am so happy to see you today", "label": "happy"},
        {"utterance_id": "gone", "sequence_id": "dialogue04", "speaker": "S0",
         "audio": "gone.wav", "video": "", "text": "Where did it go", "label": "sad"},
        {"utterance_id": "silent_text", "sequence_id": "dialogue04", "speaker": "S1",
         "audio": "happy_01.wav", "video": "", "text": "", "label": "happy"},
    ])
    table = pd.concat([table, extra], ignore_index=True)
    table.to_csv(manifest, index=False)
    assert np.isfinite(speech).all()
    return manifest
