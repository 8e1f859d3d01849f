"""The GCNet-style plug-ins load real transformers models from a local folder.

Each test writes a tiny randomly initialised model with ``save_pretrained`` (no hub), so the
loading, preprocessing and pooling code runs for real; the numbers mean nothing.
"""
from __future__ import annotations

import numpy as np
import pytest

from hardymer.features.extractors import ExtractorError, Utterance, create_extractor

from media_fixtures import needs_espeak, needs_mediapipe

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from hardymer.features.extractors.tiny import write_tiny_models
    root = tmp_path_factory.mktemp("hub")
    write_tiny_models(root)
    return root


@needs_espeak
def test_wav2vec_from_a_local_folder(models, tmp_path):
    from hardymer.features.demo_media import speak
    wav = speak("hello there", tmp_path / "x.wav")
    ex = create_extractor(f"wav2vec:path={models / 'w2v'}", "a")
    assert ex.dim == 32
    a = ex([Utterance("x", audio=wav)])[0].vector
    b = create_extractor(f"wav2vec:path={models / 'w2v'},layer=1")([Utterance("x", audio=wav)])
    assert a.shape == (32,) and np.isfinite(a).all()
    assert not np.allclose(a, b[0].vector)                 # layer=1 reads another layer
    again = create_extractor(f"wav2vec:path={models / 'w2v'}")([Utterance("x", audio=wav)])
    np.testing.assert_array_equal(a, again[0].vector)     # same weights, same vector
    assert len(ex.provenance()["versions"]["model_sha256"]) == 64


def test_deberta_batches_like_single_items(models):
    ex = create_extractor(f"deberta:path={models / 'deberta'}", "t")
    assert ex.dim == 24
    items = [Utterance("a", text="I am fine"), Utterance("b", text=""),
             Utterance("c", text="this is a much longer sentence than the first one")]
    batch = ex(items)
    assert batch[1].vector is None and batch[1].reason == "empty transcript"
    for it, r in zip(items, batch):
        if r.vector is not None:   # padding in the batch must not change a vector
            np.testing.assert_allclose(r.vector, ex([it])[0].vector, atol=1e-5)


@needs_espeak
@needs_mediapipe
def test_face_cnn_reads_face_crops(models, tmp_path):
    from hardymer.features.demo_media import face_frames, write_video
    face = write_video(tmp_path / "f.mp4", face_frames(6))
    blank = write_video(tmp_path / "b.mp4", face_frames(6, face=False))
    ex = create_extractor(f"face-cnn:path={models / 'vit'}", "v")
    r_face, r_blank = ex([Utterance("f", video=face), Utterance("b", video=blank)])
    assert r_face.vector.shape == (16,)
    assert r_face.info["face_frames"] == r_face.info["frames"] == 3    # 6 frames at 10 fps, fps=5
    assert r_blank.vector is None and r_blank.info["face_frames"] == 0


def test_a_missing_or_wrong_path_is_a_clear_error(tmp_path):
    with pytest.raises(ExtractorError, match="give its folder as wav2vec:path="):
        create_extractor("wav2vec").dim
    with pytest.raises(ExtractorError, match="config.json"):
        create_extractor(f"deberta:path={tmp_path}").dim
