"""`hardymer predict` / `hardymer.load(run).predict`: real media in, a trained run answers."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import hardymer
from hardymer.cli.main import app
from hardymer.data import open_data
from hardymer.data.dataset import collate
from hardymer.inference import PredictError

from media_fixtures import build_media, needs_espeak, needs_mediapipe

pytestmark = [needs_espeak, needs_mediapipe]
FAST = ["--set", "train.epochs=[2,2]", "--set", "train.batch_size=2"]
HARDY = ["--set", "model.teacher_epochs=[1,1]", "--set", "model.finetune_epochs=2"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    manifest = build_media(root / "media")
    data = root / "data"
    hardymer.extract(manifest, data, audio_from_video=True, progress=False)
    runner = CliRunner()
    runs = {}
    for method, conds, extra in (("momke", "atv,a", []), ("hardymer", "atv,at,t", HARDY)):
        runs[method] = root / method
        res = runner.invoke(app, ["train", "--data", str(data), "--method", method,
                                  "--condition", conds, "--fold", "0", "--out",
                                  str(runs[method]), *FAST, *extra])
        assert res.exit_code == 0, res.output
    return manifest, data, runs


def test_any_subset_of_modalities(setup):
    manifest, _, runs = setup
    media = manifest.parent
    p = hardymer.load(runs["hardymer"])
    for kwargs, used, trained_on, match in (
            ({"audio": media / "sad_00.wav"}, ["audio"], "atv", "full-modality model"),
            ({"text": "I feel so alone right now"}, ["text"], "t", "exact"),
            ({"video": media / "sad_00.mp4"}, ["video"], "atv", "full-modality model"),
            ({"audio": media / "happy_01.wav", "text": "This is wonderful news"},
             ["audio", "text"], "at", "exact")):
        r = p.predict(**kwargs)
        assert r["modalities"] == used
        assert r["model"]["trained_on"] == trained_on and r["model"]["match"] == match
        probs = r["probabilities"]
        assert set(probs) == {"happy", "sad"} and abs(sum(probs.values()) - 1) < 1e-4
        assert r["prediction"] == max(probs, key=probs.get)
        assert 0.0 <= r["hardness"]["h"] <= 1.0
        assert 1 <= len(r["neighbours"]) <= min(5, len(p.train_ids))
        d = [nb["distance"] for nb in r["neighbours"]]
        assert d == sorted(d) and all(nb["label"] in probs for nb in r["neighbours"])
    with pytest.raises(PredictError, match="at least one of audio, text, video"):
        p.predict()
    with pytest.raises(PredictError, match="no usable modality.*no face"):
        p.predict(video=media / "blank.mp4")


@pytest.mark.parametrize("method", ["momke", "hardymer"])
def test_batch_matches_the_model_on_the_data_set(setup, method):
    """The manifest's utterances, predicted from media, get exactly what the trained model
    gives the extracted data set: same extraction, same dialogues, same weights (HARDY-MER:
    the saved fine-tuning networks reproduce the fold's fine-tuned features)."""
    manifest, data, runs = setup
    p = hardymer.load(runs[method])
    results = {r["utterance_id"]: r for r in p.predict_manifest(manifest, neighbours=3)}
    ds = p.reference                      # the data the run's models read (fine-tuned or not)
    # extracted data are standardised with fold 0's training statistics (train.standardize=auto)
    train_a = p.inputs.features["a"][p.train_ids]
    np.testing.assert_allclose(train_a.mean(0), 0, atol=1e-4)
    assert not np.allclose(p.inputs.features["a"], open_data(data).features["a"])
    assert (method == "hardymer") == (not np.array_equal(ds.features["a"],
                                                         p.inputs.features["a"]))
    model = p._model("atv")
    from hardymer.models.hardymer.plan import first_plan
    plan = first_plan(runs[method] / "fold0" / "atv")
    full = np.flatnonzero(ds.available.all(1))
    batch = collate(ds, ds.sequences, None, ds.speaker_codes)
    with torch.no_grad():
        probs = torch.softmax(model(batch), -1)[batch.utt_mask].numpy()
    order = batch.index[batch.utt_mask].numpy()
    assert len(full) >= 6
    checked = 0
    for g in full:
        uid = ds.utterances["utterance_id"][g]
        r = results[uid]
        assert r["model"]["trained_on"] == "atv"
        want = probs[np.flatnonzero(order == g)[0]]
        got = np.array([r["probabilities"][c] for c in ds.class_names])
        np.testing.assert_allclose(got, want, atol=1e-5)
        # A training utterance's nearest training neighbour is itself, at distance 0.
        if g in p.train_ids:
            checked += 1
            assert r["neighbours"][0]["utterance_id"] == uid
            assert r["neighbours"][0]["distance"] < 1e-3
            if method == "hardymer":   # its own h_ind is the one training gave it
                assert r["hardness"]["h_ind"] == pytest.approx(
                    plan.h_ind[np.flatnonzero(plan.ids == g)[0]], abs=1e-3)
                assert r["neighbours"][0]["h"] == pytest.approx(
                    plan.h[np.flatnonzero(plan.ids == g)[0]], abs=1e-3)
    assert checked >= 2                   # training utterances were among them
    assert results["gone"]["extraction"]["audio"].startswith("error")
    assert results["gone"]["modalities"] == ["text"]
    assert results["gone"]["model"]["trained_on"] == ("t" if "t" in p.meta["conditions"]
                                                      else "atv")
    assert results["blank"]["missing"] == ["video"]
    if method == "momke":
        assert p.predict(text="hello")["hardness"] is None   # MoMKE: no curriculum hardness


def test_cli_json_and_batch(setup, tmp_path):
    manifest, _, runs = setup
    runner = CliRunner()
    res = runner.invoke(app, ["predict", str(runs["hardymer"]), "--text",
                              "Nothing is going well for me", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{"):])
    assert out["modalities"] == ["text"] and "hardness" in out and out["neighbours"]
    res = runner.invoke(app, ["predict", str(runs["hardymer"]), "--audio",
                              str(manifest.parent / "happy_02.wav")])
    assert res.exit_code == 0 and "prediction:" in res.output and "hardness:" in res.output
    res = runner.invoke(app, ["predict", str(runs["hardymer"])])
    assert res.exit_code == 2 and "nothing to predict from" in res.output
    preds = tmp_path / "p.csv"
    res = runner.invoke(app, ["predict", str(runs["hardymer"]), "--manifest", str(manifest),
                              "--output", str(preds), "-k", "1"])
    assert res.exit_code == 0, res.output
    import pandas as pd
    table = pd.read_csv(preds)
    assert len(table) == 10 and {"p_happy", "p_sad", "hardness", "nearest"} <= set(table)


def test_runs_without_extractors_are_refused(tmp_path):
    res = CliRunner().invoke(app, ["train", "--data", "synth:tiny", "--method", "zero-fill",
                                   "--fold", "0", "--out", str(tmp_path / "r"),
                                   "--set", "train.epochs=[1]"])
    assert res.exit_code == 0, res.output
    with pytest.raises(PredictError, match="not made by `hardymer extract`"):
        hardymer.load(tmp_path / "r")
    with pytest.raises(PredictError, match="run.json not found"):
        hardymer.load(tmp_path)


def test_a_fixed_pattern_model_reads_only_its_modalities(setup, tmp_path):
    manifest, data, _ = setup
    res = CliRunner().invoke(app, ["train", "--data", str(data), "--method", "zero-fill",
                                   "--condition", "a", "--fold", "0", "--out",
                                   str(tmp_path / "a"), "--set", "train.epochs=[1]"])
    assert res.exit_code == 0, res.output
    p = hardymer.load(tmp_path / "a")
    r = p.predict(audio=manifest.parent / "sad_00.wav", text="I feel so alone right now")
    assert r["modalities"] == ["audio"] and r["model"]["match"] == "other pattern"
    only_audio = p.predict(audio=manifest.parent / "sad_00.wav")
    assert r["probabilities"] == only_audio["probabilities"]      # the text was not read
    with pytest.raises(PredictError, match="no model for these modalities"):
        p.predict(text="I feel so alone right now")
    ds = open_data(data)
    labels = dict(zip(ds.utterances["utterance_id"], ds.labels))
    train = set(ds.utterances["utterance_id"][p.train_ids])
    for nb in only_audio["neighbours"]:
        assert nb["utterance_id"] in train
        assert nb["label"] == ds.class_names[labels[nb["utterance_id"]]]


def test_changed_data_are_refused(setup, tmp_path):
    import shutil
    manifest, data, runs = setup
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    shutil.copytree(runs["momke"], tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    meta["data"] = str(copy)
    (tmp_path / "run" / "run.json").write_text(json.dumps(meta))
    assert hardymer.load(tmp_path / "run").predict(text="hello")["modalities"] == ["text"]
    table = (copy / "utterances.csv").read_text().splitlines()
    (copy / "utterances.csv").write_text("\n".join(table[:-1]) + "\n")   # one row fewer
    import numpy as np
    for m in ("a", "t", "v"):
        np.save(copy / "features" / f"{m}.npy", np.load(copy / "features" / f"{m}.npy")[:-1])
    np.save(copy / "available.npy", np.load(copy / "available.npy")[:-1])
    (copy / "sequences.csv").unlink()
    with pytest.raises(PredictError, match="changed since"):
        hardymer.load(tmp_path / "run")


def test_hardness_of_extracted_data_shows_transcripts_and_media(setup, tmp_path):
    """Data made by `hardymer extract`: the hardness table and its explorer carry each
    training utterance's transcript and media paths, and each support's transcript."""
    import pandas as pd
    from hardymer.reports.hardness import inspect_run
    manifest, _, runs = setup
    res = inspect_run(runs["hardymer"], tmp_path / "h", html=True)
    df = pd.read_csv(tmp_path / "h" / "hardness.csv", keep_default_na=False)
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False).set_index("utterance_id")
    assert {"transcript", "audio", "video", "label_name"} <= set(df.columns)
    for r in df.itertuples():
        assert r.transcript == table.loc[r.utterance_id, "text"]
        given = table.loc[r.utterance_id, "audio"]        # stored resolved
        assert r.audio == (str((manifest.parent / given).resolve()) if given else "")
        assert r.label_name == table.loc[r.utterance_id, "label"]
    page = res["paths"]["html"].read_text()
    said = df[df.transcript != ""].transcript.iloc[0]
    assert said in page and '"transcript"' in page


@pytest.mark.parametrize("method", ["momke", "hardymer"])
def test_export_predicts_alone_with_the_same_probabilities(setup, method, tmp_path):
    """`hardymer export`, then the run folder deleted and its data moved away: the export
    answers every manifest utterance with the same probabilities, neighbours and hardness."""
    import shutil
    manifest, data, runs = setup
    run = tmp_path / "run"
    shutil.copytree(runs[method], run)
    before = hardymer.load(run).predict_manifest(manifest)
    res = CliRunner().invoke(app, ["export", str(run), "--fold", "0", "--out",
                                   str(tmp_path / "export")])
    assert res.exit_code == 0, res.output
    export = tmp_path / "export"
    card = (export / "MODEL_CARD.md").read_text()
    assert card.startswith("---\nlibrary_name: hardymer\n") and "## Limitations" in card
    assert "test WA" in card and "Selection protocol `val`" in card
    from safetensors import safe_open
    with safe_open(str(export / "fold0" / "atv" / "best.safetensors"), "pt") as f:
        assert all(k.startswith("model.") for k in f.keys())     # weights only
    assert (export / "standardization.safetensors").is_file()      # extracted: standardised
    shutil.rmtree(run)
    away = data.with_name("data-away")
    data.rename(away)
    try:
        after = hardymer.load(export).predict_manifest(manifest)
    finally:
        away.rename(data)
    assert len(after) == len(before)
    for a, b in zip(after, before):
        assert a.keys() == b.keys() and a["utterance_id"] == b["utterance_id"]
        if "error" in b:
            assert a["error"] == b["error"]
            continue
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-6)
        assert [n["utterance_id"] for n in a["neighbours"]] == \
            [n["utterance_id"] for n in b["neighbours"]]
        assert [n["distance"] for n in a["neighbours"]] == \
            pytest.approx([n["distance"] for n in b["neighbours"]], abs=1e-6)
        assert a["hardness"] == b["hardness"]
        assert a["model"]["trained_on"] == b["model"]["trained_on"]
    if method == "hardymer":
        assert any(r.get("hardness") and "h_ind" in r["hardness"] for r in after)
