"""`hardymer extract` on real media: dims, availability, determinism, faces, resume, errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hardymer.cli.main import app
from hardymer.data import open_data
from hardymer.data.validate import DataError, DataWarning
from hardymer.features.extract import extract
from hardymer.features.extractors import ExtractorError, Utterance, create_extractor, parse_spec
from hardymer.features.manifest import read_manifest
from hardymer.features.media import MediaError, load_audio

from media_fixtures import build_media, needs_espeak, needs_mediapipe

pytestmark = [needs_espeak, needs_mediapipe]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    return build_media(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="module")
def extracted(media, tmp_path_factory):
    out = tmp_path_factory.mktemp("ex") / "set"
    report = extract(media, out, audio_from_video=True, progress=False)
    return out, report


def test_dims_availability_and_faces(extracted):
    out, report = extracted
    ds = open_data(out)
    assert ds.modalities == ("a", "t", "v")
    assert ds.dims == {"a": 88, "t": 384, "v": 2 * 478 * 3}
    avail = pd.DataFrame(ds.available, columns=list("atv"),
                         index=ds.utterances["utterance_id"])
    # Face video -> face found in every frame; blank video -> video absent.
    row = ds.utterances.set_index("utterance_id")
    assert avail.loc["happy_00"].all()
    assert row.loc["happy_00", "video_face_frames"] == row.loc["happy_00", "video_frames"] > 0
    assert not avail.loc["blank", "v"] and avail.loc["blank", ["a", "t"]].all()
    assert row.loc["blank", "video_face_frames"] == 0
    assert row.loc["blank", "video_status"].startswith("absent: no face")
    # The sound track of a video stands in for the empty audio cell (--audio-from-video).
    assert avail.loc["track"].all()
    # A file that does not exist fails alone, and its modality is missing, not zero-filled.
    assert not avail.loc["gone", "a"] and avail.loc["gone", "t"]
    assert row.loc["gone", "audio_status"].startswith("error:")
    assert not avail.loc["silent_text", "t"] and row.loc["silent_text", "text_status"] \
        == "not given"                                 # an empty cell = not given
    assert list(report.errors["utterance_id"]) == ["gone"]
    assert "file not found" in report.errors["error"].iloc[0]
    errors_csv = pd.read_csv(out / "extraction" / "errors.csv")
    assert list(errors_csv["utterance_id"]) == ["gone"]
    # Text vectors are unit-norm sentence embeddings; labels come from the class names.
    t = ds.features["t"][ds.available[:, 1]]
    assert np.allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-4)
    assert ds.class_names == ("happy", "sad")
    assert ds.labels[list(ds.utterances["utterance_id"]).index("sad_00")] == 1
    # Provenance: every extractor with its dims and versions, enough to rebuild it.
    prov = json.loads((out / "dataset.json").read_text())["meta"]["extraction"]["extractors"]
    assert {m: p["dim"] for m, p in prov.items()} == {"a": 88, "t": 384, "v": 2868}
    assert prov["a"]["versions"]["opensmile"] and prov["t"]["versions"]["model_sha256"]
    assert create_extractor(prov["v"]["spec"]).dim == 2868


def test_deterministic(extracted, media, tmp_path):
    out, _ = extracted
    again = extract(media, tmp_path / "again", audio_from_video=True, progress=False).dataset
    first = open_data(out)
    for m in first.modalities:
        np.testing.assert_array_equal(first.features[m], again.features[m])
    np.testing.assert_array_equal(first.available, again.available)


def test_resume_extracts_only_what_is_missing(media, tmp_path):
    folder = media.parent
    out = tmp_path / "set"
    first = extract(media, out, video="none", progress=False)
    assert first.extracted["a"] == 9 and first.counts["a"]["error"] == 1
    again = extract(media, out, video="none", progress=False)
    assert again.extracted == {"a": 1, "t": 0}       # only the failed file is retried
    # Fix the failing file: the next run extracts it and only it; nothing else changes.
    import shutil
    shutil.copy(folder / "sad_01.wav", folder / "gone.wav")
    try:
        fixed = extract(media, out, video="none", progress=False)
    finally:
        (folder / "gone.wav").unlink()
    assert fixed.extracted == {"a": 1, "t": 0} and len(fixed.errors) == 0
    ds = open_data(out)
    i = list(ds.utterances["utterance_id"]).index("gone")
    j = list(ds.utterances["utterance_id"]).index("sad_01")
    assert ds.available[i, 0]
    np.testing.assert_array_equal(ds.features["a"][i], ds.features["a"][j])


def test_cli_reports_errors_and_writes_the_rest(media, tmp_path):
    out = tmp_path / "cli"
    res = CliRunner().invoke(app, ["extract", str(media), "--out", str(out), "--video", "none",
                                   "--quiet"])
    assert res.exit_code == 1, res.output
    assert "1 file(s) failed" in res.output and "gone.wav" in res.output
    assert open_data(out).n_utterances == 10


def test_audio_track_and_time_window(media):
    folder = media.parent
    wav = load_audio(folder / "happy_00.wav")
    track = load_audio(folder / "track.mp4")
    # same speech; AAC adds up to ~0.1 s of encoder delay and frame padding
    assert abs(len(track) - len(wav)) < 0.15 * 16000
    part = load_audio(folder / "happy_00.wav", start=0.2, end=0.7)
    assert abs(len(part) - 0.5 * 16000) <= 2
    # aligned to the sample (the resampler restarts after the seek: tiny edge differences)
    np.testing.assert_allclose(part[:400], wav[3200:3600], atol=1e-4)
    with pytest.raises(MediaError, match="no audio stream"):
        load_audio(folder / "blank.mp4")


def test_compare_feature_set(media):
    ex = create_extractor("opensmile:feature_set=ComParE_2016")
    assert ex.dim == 6373
    r = ex([Utterance("x", audio=media.parent / "sad_00.wav")])[0]
    assert r.vector.shape == (6373,) and np.isfinite(r.vector).all()


def test_manifest_errors_name_file_and_column(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("id,audio\nx,a.wav\n")
    with pytest.raises(DataError, match=r"m.csv.*utterance_id"):
        read_manifest(bad)
    bad.write_text("utterance_id,audio\nx,a.wav\nx,b.wav\n")
    with pytest.raises(DataError, match="appears more than once"):
        read_manifest(bad)
    bad.write_text("utterance_id,audio,start,end\nx,a.wav,2,1\n")
    with pytest.raises(DataError, match=r"\[end\].*end 1.0 <= start 2.0"):
        read_manifest(bad)
    bad.write_text("utterance_id,audio,label\nx,a.wav,happy\ny,b.wav,\n")
    with pytest.raises(DataError, match=r"\[label\].*'y' has no label"):
        read_manifest(bad)
    bad.write_text("utterance_id,label\nx,happy\n")
    with pytest.raises(DataError, match="at least one of the columns"):
        read_manifest(bad)
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text('{"utterance_id": "a", "text": "hi", "start": null}\n')
    table = read_manifest(jsonl).table
    assert table.loc[0, "text"] == "hi" and np.isnan(table.loc[0, "start"])


def test_folder_input_with_labels(media, tmp_path):
    for label in ("happy", "sad"):
        (tmp_path / label).mkdir()
        src = media.parent / f"{label}_00.wav"
        (tmp_path / label / "clip.wav").write_bytes(src.read_bytes())
        (tmp_path / label / "clip.txt").write_text(f"I feel {label}\n")
    table = read_manifest(tmp_path, labels_from_folders=True).table
    assert list(table["utterance_id"]) == ["happy/clip", "sad/clip"]
    assert table.loc[0, "audio"] == str((tmp_path / "happy" / "clip.wav").resolve())
    import os
    here = os.getcwd()
    os.chdir(tmp_path.parent)                 # a relative folder, as typed on a command line
    try:
        rel = read_manifest(Path(tmp_path.name), labels_from_folders=True).table
    finally:
        os.chdir(here)
    assert rel.loc[1, "audio"] == str((tmp_path / "sad" / "clip.wav").resolve())
    assert list(table["label"]) == ["happy", "sad"] and table.loc[1, "text"] == "I feel sad"
    report = extract(tmp_path, None, video="none", labels_from_folders=True, progress=False)
    assert report.dataset.available.all() and report.dataset.class_names == ("happy", "sad")


def test_extractor_specs():
    assert parse_spec("opensmile:feature_set=ComParE_2016,sample_rate=8000") == (
        "opensmile", {"feature_set": "ComParE_2016", "sample_rate": "8000"})
    assert create_extractor("opensmile:sample_rate=8000").options.sample_rate == 8000
    with pytest.raises(ExtractorError, match="unknown extractor 'nope'"):
        create_extractor("nope")
    with pytest.raises(ExtractorError, match="extracts text, not audio"):
        create_extractor("minilm", "a")
    with pytest.raises(ExtractorError, match="unknown option"):
        create_extractor("facemesh:colour=red")
    with pytest.raises(ExtractorError, match="expected int"):
        create_extractor("facemesh:max_frames=many")
    with pytest.raises(ExtractorError, match="feature_set"):
        create_extractor("opensmile:feature_set=eGeMAPS99")
    assert create_extractor("facemesh:refine=false").dim == 2 * 468 * 3


def test_an_interrupted_run_resumes_where_it_stopped(media, tmp_path, monkeypatch):
    from hardymer.features.extractors.audio import OpenSmileExtractor
    real = OpenSmileExtractor.extract_one
    calls = {"n": 0}

    def flaky(self, item):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt          # Ctrl-C in the middle of the audio pass
        return real(self, item)

    monkeypatch.setattr(OpenSmileExtractor, "extract_one", flaky)
    out = tmp_path / "set"
    with pytest.raises(KeyboardInterrupt):
        extract(media, out, video="none", text="none", progress=False)
    monkeypatch.setattr(OpenSmileExtractor, "extract_one", real)
    resumed = extract(media, out, video="none", text="none", progress=False)
    assert resumed.extracted["a"] == 9 - 3        # 9 given; 3 finished before the interrupt
    whole = extract(media, None, video="none", text="none", progress=False).dataset
    with pytest.warns(DataWarning, match="no available modality"):  # clips without sound
        got = open_data(out)
    np.testing.assert_array_equal(got.features["a"],
                                  whole.select_utterances(whole.available.any(1)).features["a"])


def test_refuses_to_write_into_another_data_set(tmp_path, media):
    from hardymer.data.generic import write_generic
    from hardymer.data.synthetic import generate
    write_generic(generate("tiny"), tmp_path / "syn")
    with pytest.raises(FileExistsError, match="not made by `hardymer extract`"):
        extract(media, tmp_path / "syn", video="none", progress=False)


def test_changed_inputs_are_extracted_again_and_only_they(media, tmp_path):
    import shutil
    folder = tmp_path / "m"
    shutil.copytree(media.parent, folder)
    manifest = folder / "manifest.csv"
    out = tmp_path / "set"
    extract(manifest, out, video="none", progress=False)
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    table.loc[table["utterance_id"] == "sad_00", "text"] = "A different sentence"
    table.loc[table["utterance_id"] == "happy_00", ["start", "end"]] = ["0.1", "0.9"]
    table.to_csv(manifest, index=False)
    shutil.copy(folder / "sad_02.wav", folder / "sad_01.wav")     # new content, same name
    again = extract(manifest, out, video="none", progress=False)
    # audio: happy_00 (window), sad_01 (content), gone (failed); text: sad_00 only
    assert again.extracted == {"a": 3, "t": 1}
    ds = open_data(out)
    ids = list(ds.utterances["utterance_id"])
    np.testing.assert_array_equal(ds.features["a"][ids.index("sad_01")],
                                  ds.features["a"][ids.index("sad_02")])


def test_label_forms(tmp_path):
    from hardymer.features.extract import _labels
    table = pd.DataFrame({"label": ["1", "5", "3", "5"]})
    ids, task, names = _labels(table, None, None, "m.csv")
    assert task == "classification" and names == ["1", "3", "5"] and list(ids) == [0, 2, 1, 2]
    ids, task, names = _labels(pd.DataFrame({"label": ["0.5", "-1.2"]}), None, None, "m.csv")
    assert task == "regression" and ids.dtype == np.float32
    ids, _, names = _labels(pd.DataFrame({"label": ["1", "0"]}), None, ["neg", "pos"], "m.csv")
    assert list(ids) == [1, 0] and names == ["neg", "pos"]
    with pytest.raises(DataError, match="not one of the classes"):
        _labels(pd.DataFrame({"label": ["joy"]}), None, ["neg", "pos"], "m.csv")


def _transcode(src: Path, dst: Path, codec: str) -> Path:
    """Re-encode an audio file with PyAV (flac: lossless; mp3: lossy)."""
    import av
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        s_in = inp.streams.audio[0]
        s_out = out.add_stream(codec, rate=s_in.rate)
        s_out.layout = "mono"
        fmt = s_out.codec_context.codec.audio_formats[0].name
        resampler = av.AudioResampler(format=fmt, layout="mono", rate=s_in.rate)
        for frame in inp.decode(s_in):
            for f in resampler.resample(frame):
                for pkt in s_out.encode(f):
                    out.mux(pkt)
        for pkt in s_out.encode(None):
            out.mux(pkt)
    return dst


def test_flac_and_mp3_decode_like_the_wav(media, tmp_path):
    wav = media.parent / "sad_01.wav"
    ex = create_extractor("opensmile")
    ref = ex([Utterance("w", audio=wav)])[0].vector
    flac = ex([Utterance("f", audio=_transcode(wav, tmp_path / "x.flac", "flac"))])[0].vector
    np.testing.assert_allclose(flac, ref, rtol=1e-5, atol=1e-4)      # lossless: same features
    mp3 = ex([Utterance("m", audio=_transcode(wav, tmp_path / "x.mp3", "libmp3lame"))])[0]
    assert mp3.vector.shape == (88,) and np.isfinite(mp3.vector).all()
    # lossy but the same speech: closer to its own wav than to another utterance's
    other = ex([Utterance("o", audio=media.parent / "happy_00.wav")])[0].vector
    z = lambda v: v / (np.abs(ref) + 1e-3)  # noqa: E731  (features differ in scale)
    assert np.linalg.norm(z(mp3.vector) - z(ref)) < np.linalg.norm(z(other) - z(ref))


def test_video_time_window_and_rate(tmp_path):
    from hardymer.features.demo_media import face_frames, write_video
    from hardymer.features.media import video_frames
    video = write_video(tmp_path / "v.mp4", face_frames(20), fps=10)      # 2 s
    assert len(list(video_frames(video))) == 20
    assert len(list(video_frames(video, fps=5))) == 10
    window = list(video_frames(video, start=0.5, end=1.0))
    assert 5 <= len(window) <= 6                                       # 0.5 s at 10 fps
    assert len(list(video_frames(video, max_frames=3))) == 3
    with pytest.raises(MediaError, match="file not found"):
        list(video_frames(tmp_path / "nope.mp4"))


def test_a_silent_video_as_audio_is_absent_not_an_error(media, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"utterance_id,audio,text\nq,{media.parent / 'blank.mp4'},hello\n")
    report = extract(manifest, None, video="none", progress=False)
    assert report.dataset.utterances.loc[0, "audio_status"] == \
        "absent: no audio stream in the file"
    assert len(report.errors) == 0 and not report.dataset.available[0, 0]
