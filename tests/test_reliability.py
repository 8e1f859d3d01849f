"""Nothing silently wrong: one test per hole found by trying the CLI as a new user would.

Each test is named after what it guards; the item numbers are those of the reliability issue
(docs/reliability.md lists them with the behaviour chosen). The kill-and-resume checks that
held before live here too, so none of it can regress.
"""
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import hardymer
from hardymer.cli.main import app
from hardymer.data.fingerprint import file_digest
from hardymer.data.generic import read_generic, write_generic
from hardymer.data.synthetic import generate
from hardymer.data.validate import DataWarning
from hardymer.fileio import folder_lock
from hardymer.inference import PredictError
from hardymer.runs.config import load_run_config
from hardymer.runs.store import ResultsStore
from hardymer.runs.sweep import load_spec, run_sweep
from hardymer.training.trainer import Trainer
from hardymer.training.loaders import FoldData
from hardymer.protocol.splits import make_folds
from hardymer.protocol.conditions import parse_condition
from hardymer.models import create_method

runner = CliRunner()
ZF = ["--method", "zero-fill", "--condition", "a", "--fold", "0", "--set", "train.epochs=[2]",
      "--no-progress"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def tiny_folder(path, edit=None):
    """The tiny preset as a generic folder; ``edit(table)`` may change utterances.csv."""
    write_generic(generate("tiny", seed=0), path)
    if edit is not None:
        table = pd.read_csv(path / "utterances.csv", dtype=str, keep_default_na=False)
        edit(table)
        table.to_csv(path / "utterances.csv", index=False)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_folder(tmp_path_factory.mktemp("rel") / "data")


class Payload:
    """A pickle whose loading creates a file: proof that it ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# --- 1. no pickle without the command-line opt-in -----------------------------------------------
def test_grid_file_cannot_allow_a_pickle(tmp_path):
    root = tmp_path / "ref"
    root.mkdir()
    marker = tmp_path / "payload-ran"
    (root / "IEMOCAP_features_raw_4way.pkl").write_bytes(pickle.dumps(Payload(marker)))
    grid = tmp_path / "g.yaml"
    grid.write_text(f"data: {root}\nmethods: [zero-fill]\nconditions: [a]\ntrust_pickle: true\n")
    res = invoke("sweep", "--config", grid, "--out", tmp_path / "s", "--no-progress")
    assert res.exit_code == 2 and "--trust-pickle on the command line" in res.output
    assert not marker.exists() and not (tmp_path / "s").exists()
    with pytest.raises(ValueError, match="trust_pickle is not read from a grid file"):
        load_spec(grid)


def test_sweep_folder_does_not_keep_the_pickle_opt_in(tmp_path, data):
    res = invoke("sweep", "--data", data, "--methods", "zero-fill", "--conditions", "a",
                 "--folds", "0", "--set", "train.epochs=[1]", "--out", tmp_path / "s",
                 "--no-progress", "--no-report", "--trust-pickle")
    assert res.exit_code == 0, res.output
    assert "trust_pickle" not in json.loads((tmp_path / "s" / "sweep.json").read_text())


# --- 2. changed data is detected ----------------------------------------------------------------
def test_edited_middle_rows_stop_resume_evaluate_and_predict(tmp_path):
    folder = tiny_folder(tmp_path / "data")
    out = tmp_path / "run"
    res = invoke("train", "--data", folder, *ZF, "--out", out)
    assert res.exit_code == 0, res.output
    feats = np.load(folder / "features" / "a.npy")
    feats[120:125] += 1.0          # far from the first and last 64 rows
    np.save(folder / "features" / "a.npy", feats)
    res = invoke("train", "--data", folder, *ZF, "--out", out)
    assert res.exit_code == 2 and "features/a.npy differs" in res.output, res.output
    res = invoke("evaluate", out)
    assert res.exit_code == 2 and "features/a.npy differs" in res.output, res.output
    with pytest.raises(PredictError, match="features/a.npy differs"):
        hardymer.load(out)


def test_file_digest_is_cached_by_size_and_mtime(tmp_path):
    f = tmp_path / "x.npy"
    f.write_bytes(b"0123456789")
    first = file_digest(f)
    st = f.stat()
    f.write_bytes(b"9876543210")                      # same size ...
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... same mtime: the cache answers
    assert file_digest(f) == first
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert file_digest(f) != first


# --- 3. typos are errors -------------------------------------------------------------------------
def test_settings_without_section_or_with_a_typo_stop(tmp_path, data):
    res = invoke("train", "--data", data, *ZF, "--set", "epochs=[1]", "--out", tmp_path / "r")
    assert res.exit_code == 2 and "did you mean train.epochs?" in res.output
    cfg = tmp_path / "c.yaml"
    cfg.write_text("trian:\n  epochs: [1]\n")
    res = invoke("train", "--data", data, *ZF, "--config", cfg, "--out", tmp_path / "r")
    assert res.exit_code == 2 and "unknown section 'trian'; did you mean train?" in res.output
    res = invoke("train", "--data", data, *ZF, "--set", "train.epoch=[1]", "--out", tmp_path / "r")
    assert res.exit_code == 2 and "did you mean train.epochs?" in res.output
    assert not (tmp_path / "r").exists()


def test_a_string_option_spelled_true_stays_a_string(tmp_path):
    # YAML reads "true" as a boolean; HARDY-MER's rec_target takes the string "true"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  rec_target: true\n")
    for kw in ({"overrides": ["model.reference_compat=true", "model.rec_target=true"]},
               {"overrides": ["model.reference_compat=true"], "config_file": str(cfg)}):
        run = load_run_config("hardymer", "iemocap", **kw)
        assert run.model["rec_target"] == "true" and run.model["reference_compat"] is True


# --- 4. the fold scheme never changes silently ---------------------------------------------------
def test_one_blank_session_is_an_error_and_the_scheme_is_stored(tmp_path, data):
    def blank(table):
        table.loc[7, "session"] = ""
    folder = tiny_folder(tmp_path / "blank", blank)
    uid = pd.read_csv(folder / "utterances.csv", dtype=str)["utterance_id"][7]
    for cmd in (["info", folder], ["train", "--data", folder, *ZF, "--out", tmp_path / "r"]):
        res = invoke(*cmd)
        assert res.exit_code == 2 and f"1 of 260 utterances have no session (first: {uid})" \
            in res.output and "--folds-scheme" in res.output, res.output
    res = invoke("info", folder, "--folds-scheme", "kfold")
    assert res.exit_code == 0 and "folds (kfold):" in res.output

    def mixed(table):  # one utterance in the middle of a dialogue moved to another session
        table.loc[5, "session"] = "3"
    res = invoke("info", tiny_folder(tmp_path / "mixed", mixed))
    seq = pd.read_csv(tmp_path / "mixed" / "utterances.csv", dtype=str)["sequence_id"][5]
    assert res.exit_code == 2 and f"sequence {seq} has utterances in session 1 and 3" \
        in res.output, res.output

    def odd_row(table):  # a bad split value on a row that is not its sequence's first
        del table["session"]
        table["split"] = "train"
        table.loc[table.index[-30:], "split"] = "test"
        table.loc[5, "split"] = "tst"
    res = invoke("info", tiny_folder(tmp_path / "oddrow", odd_row))
    assert res.exit_code == 2 and "unknown value(s) tst in column split" in res.output
    res = invoke("train", "--data", data, *ZF, "--out", tmp_path / "ok")
    assert res.exit_code == 0 and "folds session (session 1," in res.output
    assert "Folds (session): 0" in res.output
    assert ResultsStore(tmp_path / "ok" / "results.sqlite").frame()["fold_scheme"].tolist() \
        == ["session"]


# --- 5. defaults mean what --help says; a failed start writes nothing ---------------------------
def test_sweep_without_seeds_runs_seed_0_and_bad_folds_write_nothing(tmp_path, data):
    assert load_spec(None, data=str(data), methods=["zero-fill"]).seeds == [0]
    res = invoke("sweep", "--data", data, "--methods", "zero-fill", "--conditions", "a",
                 "--folds", "9", "--out", tmp_path / "bad", "--no-progress")
    assert res.exit_code == 2 and "fold 9 does not exist" in res.output
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("setting,key", [
    ("train.lr=-1", "train.lr"), ("train.batch_size=0", "train.batch_size"),
    ("train.val_fraction=1.5", "train.val_fraction"), ("train.epochs=[0]", "train.epochs"),
    ("train.select_metric=XYZ", "train.select_metric"), ("model.dropout=1.5", "model.dropout"),
] + ([] if torch.cuda.is_available() else [("train.device=cuda", "train.device")]))
def test_failed_start_writes_nothing_and_the_corrected_command_runs(tmp_path, data, setting,
                                                                    key):
    out = tmp_path / "r"
    res = invoke("train", "--data", data, *ZF, "--set", setting, "--out", out)
    assert res.exit_code == 2 and f"error: {key}=" in res.output, res.output
    assert "Invalid learning rate" not in res.output and not out.exists()
    res = invoke("train", "--data", data, *ZF, "--out", out)
    assert res.exit_code == 0, res.output


def test_select_metric_of_the_other_task_is_refused(tmp_path, data):
    res = invoke("train", "--data", data, *ZF, "--set", "train.select_metric=MAE", "--out",
                 tmp_path / "r")
    assert res.exit_code == 2 and "train.select_metric='MAE'" in res.output
    assert not (tmp_path / "r").exists()


def test_protocol_from_set_or_config_is_honoured_and_checked(tmp_path, data):
    res = invoke("train", "--data", data, *ZF, "--set", "train.protocol=paper", "--out",
                 tmp_path / "p")
    assert res.exit_code == 0 and "protocol paper" in res.output, res.output
    assert json.loads((tmp_path / "p" / "run.json").read_text())["config"]["train"][
        "protocol"] == "paper"
    res = invoke("train", "--data", data, *ZF, "--set", "train.protocol=foo", "--out",
                 tmp_path / "f")
    assert res.exit_code == 2 and "train.protocol='foo'" in res.output
    for key, flag in (("train.protocol=paper", "--protocol"), ("train.seed=5", "--seeds")):
        with pytest.raises(ValueError, match=f"is a field of the grid in a sweep; use {flag}"):
            load_spec(None, data="synth:tiny", methods=["zero-fill"], set=[key])


def test_run_sweep_and_data_folders_are_not_mixed(tmp_path, data):
    run = tmp_path / "run"
    assert invoke("train", "--data", data, *ZF, "--out", run).exit_code == 0
    res = invoke("sweep", "--data", data, "--methods", "zero-fill", "--conditions", "a",
                 "--folds", "0", "--set", "train.epochs=[1]", "--out", run, "--no-progress")
    assert res.exit_code == 2 and "is a run folder" in res.output
    sweep = tmp_path / "sweep"
    assert invoke("sweep", "--data", data, "--methods", "zero-fill", "--conditions", "a",
                  "--folds", "0", "--set", "train.epochs=[1]", "--out", sweep,
                  "--no-progress", "--no-report").exit_code == 0
    res = invoke("train", "--data", data, *ZF, "--out", sweep)
    assert res.exit_code == 2 and "is a sweep folder" in res.output
    res = invoke("train", "--data", data, *ZF, "--out", data)
    assert res.exit_code == 2 and "is a data set folder" in res.output
    afile = tmp_path / "afile"
    afile.write_text("x")
    for cmd in (["train", "--data", data, *ZF], ["sweep", "--data", data, "--methods",
                                                 "zero-fill"]):
        res = invoke(*cmd, "--out", afile / "sub")
        assert res.exit_code == 2 and f"{afile} is a file" in res.output, res.output
    res = invoke("sweep", "--data", data, "--methods", "zero-fill", "--out", tmp_path / "w",
                 "--workers", "0")
    assert res.exit_code == 2 and "--workers 0" in res.output


def test_a_sweep_resume_on_changed_data_rewrites_nothing(tmp_path):
    folder = tiny_folder(tmp_path / "data")
    sweep = tmp_path / "s"
    args = ["sweep", "--data", folder, "--methods", "zero-fill", "--folds", "0", "--set",
            "train.epochs=[1]", "--out", sweep, "--no-progress", "--no-report"]
    assert invoke(*args, "--conditions", "a").exit_code == 0
    grid = (sweep / "sweep.json").read_text()
    feats = np.load(folder / "features" / "t.npy")
    feats[100] += 1
    np.save(folder / "features" / "t.npy", feats)
    res = invoke(*args, "--conditions", "a,t")
    assert res.exit_code == 2 and "features/t.npy differs" in res.output
    assert (sweep / "sweep.json").read_text() == grid


def test_a_base_methods_setting_reaches_its_variants():
    spec = load_spec(None, data="synth:tiny", methods=["hardymer:no-finetune", "momke"],
                     set=["hardymer:model.teacher_epochs=[1,1]"])
    assert "model.teacher_epochs=[1,1]" in spec.methods[0].set
    assert spec.methods[1].set == []
    with pytest.raises(ValueError, match=r"e\.g\. --set hardymer:no-finetune:model\.k=5"):
        load_spec(None, data="synth:tiny", methods=["hardymer:no-finetune"],
                  set=["gcnet:model.k=5"])


# --- 6. one writer per run folder ----------------------------------------------------------------
def test_two_trains_into_one_folder_lose_nothing(tmp_path, data):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    base = [sys.executable, "-m", "hardymer.cli.main", "train", "--data", str(data),
            "--method", "zero-fill", "--fold", "0", "--set", "train.epochs=[30]",
            "--no-progress", "--out", str(out)]
    procs = [subprocess.Popen(base + ["--condition", c], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for c in ("a", "t")]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    meta = json.loads((out / "run.json").read_text())
    assert meta["conditions"] == ["a", "t"]
    assert sorted(ResultsStore(out / "results.sqlite").frame()["condition"]) == ["a", "t"]


def test_a_held_folder_makes_the_second_writer_wait_and_says_who_holds_it(tmp_path):
    heard, order = [], []
    with folder_lock(tmp_path):
        def second():
            with folder_lock(tmp_path, notify=heard.append):
                order.append("second")
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        order.append("first done")
    t.join(10)
    assert order == ["first done", "second"]
    assert heard and f"pid {os.getpid()}" in heard[0]


# --- 7. utterances with no modality at all -------------------------------------------------------
def test_utterances_without_any_modality_are_left_out_and_counted(tmp_path):
    folder = tiny_folder(tmp_path / "data")
    available = np.load(folder / "available.npy")
    available[[3, 50, 51]] = False
    np.save(folder / "available.npy", available)
    with pytest.warns(DataWarning, match=r"3 utterance\(s\) have no available modality"):
        ds = read_generic(folder)
    assert ds.n_utterances == 257 and ds.available.any(axis=1).all()
    res = invoke("train", "--data", folder, *ZF, "--out", tmp_path / "r")
    assert res.exit_code == 0, res.output
    assert "3 utterance(s) without any available modality were left out" in res.output
    assert ResultsStore(tmp_path / "r" / "results.sqlite").frame()["n_dropped"].tolist() == [3]


# --- 8. messages instead of tracebacks -----------------------------------------------------------
def test_bad_arguments_are_messages(tmp_path, data):
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    cases = [
        (["train", "--data", data, *ZF[:4], "--folds", "0,x", "--out", tmp_path / "r"],
         "--folds '0,x'"),
        (["train", "--data", data, *ZF, "--out", afile], "is a file"),
        (["sweep", "--data", data, "--methods", "zero-fill", "--out", afile], "is a file"),
        (["train", "--data", data, "--method", "nope", "--out", tmp_path / "r"],
         "unknown method 'nope'; registered: cif-mmin"),
    ]
    for args, text in cases:
        res = invoke(*args)
        assert res.exit_code == 2 and text in res.output, (args, res.output)
        assert "Traceback" not in res.output and '"' not in res.output.split("error:")[-1]
    assert "hardymer-teacher" not in invoke("train", "--data", data, "--method", "nope",
                                            "--out", tmp_path / "r").output
    grid = tmp_path / "g.yaml"
    grid.write_text(f"data: {data}\nmethods: [{{name: x, method: nope}}]\n")
    res = invoke("sweep", "--config", grid, "--out", tmp_path / "s")
    assert res.exit_code == 2 and "error: methods: unknown method 'nope'" in res.output


def test_evaluate_with_an_unknown_split(tmp_path, data):
    out = tmp_path / "r"
    assert invoke("train", "--data", data, *ZF, "--out", out).exit_code == 0
    res = invoke("evaluate", out, "--split", "foo")
    assert res.exit_code == 2 and "--split 'foo'; expected one of test, val, train" in res.output


def test_info_on_one_session_or_an_unknown_split_value(tmp_path):
    def one(table):
        table["session"] = "1"
    res = invoke("info", tiny_folder(tmp_path / "one", one))
    assert res.exit_code == 2 and "needs at least two sessions" in res.output
    assert "--folds-scheme kfold" in res.output

    def odd(table):
        del table["session"]
        seqs = list(dict.fromkeys(table["sequence_id"]))
        table["split"] = table["sequence_id"].map(
            {s: "holdout" if s == seqs[-1] else "test" if s in seqs[-4:] else "train"
             for s in seqs})
    res = invoke("info", tiny_folder(tmp_path / "odd", odd))
    assert res.exit_code == 2 and "unknown value(s) holdout in column split" in res.output


def test_non_integer_class_label_names_its_row_and_utterance(tmp_path):
    def frac(table):
        table.loc[9, "label"] = "1.5"
    folder = tiny_folder(tmp_path / "d", frac)
    uid = pd.read_csv(folder / "utterances.csv", dtype=str)["utterance_id"][9]
    res = invoke("info", folder)
    assert res.exit_code == 2 and f"label 1.5 of utterance '{uid}' (row 9)" in res.output


def test_truncated_checkpoints_say_how_to_recover_and_the_advice_works(tmp_path, data):
    out = tmp_path / "r"
    args = ["train", "--data", data, *ZF, "--out", out]
    assert invoke(*args).exit_code == 0
    cell = out / "fold0" / "a"
    (cell / "result.json").unlink()               # as if killed before the cell finished
    (cell / "last.json").write_text('{"epo')      # a torn sidecar: the tensor file's copy wins
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    (cell / "result.json").unlink()
    blob = (cell / "last.safetensors").read_bytes()
    (cell / "last.safetensors").write_bytes(blob[: len(blob) // 2])
    res = invoke(*args)
    assert res.exit_code == 2 and "last.safetensors is truncated or corrupt" in res.output
    assert f"delete the folder {cell}" in res.output.replace("\n", "")
    shutil.rmtree(cell)                           # the advice, followed
    assert invoke(*args).exit_code == 0
    blob = (cell / "best.safetensors").read_bytes()
    (cell / "best.safetensors").write_bytes(blob[:100])
    res = invoke("evaluate", out)
    assert res.exit_code == 2 and "best.safetensors is truncated or corrupt" in res.output
    assert f"delete the folder {cell}" in res.output.replace("\n", "")
    shutil.rmtree(cell)
    assert invoke(*args).exit_code == 0 and invoke("evaluate", out).exit_code == 0


# --- 9. say what a command will cost before it starts -------------------------------------------
def test_the_schedule_lists_hidden_stages_and_one_knob_shortens_them_all(tmp_path, data):
    cfg = load_run_config("hardymer", "iemocap", ["budget.scale=0.1"])
    assert cfg.train.epochs == [3, 3] and cfg.model["teacher_epochs"] == [10, 10]
    assert cfg.model["finetune_epochs"] == 2
    res = invoke("train", "--data", data, "--method", "hardymer", "--condition", "at",
                 "--fold", "0", "--set", "budget.scale=0.02", "--no-progress",
                 "--out", tmp_path / "h")
    assert res.exit_code == 0, res.output
    assert ("schedule: fine-tuning a 1 epoch (per fold); fine-tuning t 1 epoch (per fold); "
            "fine-tuning v 1 epoch (per fold); teacher unimodal 2 epochs (per fold); teacher "
            "mixing 2 epochs (per fold); unimodal 1 epoch (per fold, shared by conditions); "
            "mixing 1 epoch (per condition)") in res.output
    assert "= 9 epochs for 1 fold(s) x 1 condition(s)" in res.output
    # the schedule counts what runs: one fine-tuning per modality
    assert len(list((tmp_path / "h").glob("fold0/_shared/hardymer/finetune/*.safetensors"))) == 3


def test_without_progress_bars_the_estimate_is_a_log_line(tmp_path, data):
    res = subprocess.run([sys.executable, "-m", "hardymer.cli.main", "train", "--data",
                          str(data), *ZF[:4], "--set", "train.epochs=[3]", "--no-progress",
                          "--out", str(tmp_path / "r")], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert "zero-fill [a]: first epoch" in res.stderr and "for the 2 epochs left" in res.stderr


def test_trainer_prints_an_estimate_after_the_first_epoch(capsys, toy):
    cfg = load_run_config("zero-fill", "iemocap", ["train.epochs=[3]"])
    folds = make_folds(toy)
    data = FoldData(toy, folds[0], parse_condition("at", toy.modalities))
    method = create_method("zero-fill", dims=toy.dims, n_outputs=4, task="classification")
    Trainer(cfg.train, None, progress=True).fit(method, data)
    err = capsys.readouterr().err
    assert "first epoch" in err and "estimated" in err and "for the 2 epochs left" in err


# --- 10. kill and resume (held before; kept from regressing) ------------------------------------
def _wait_for(cond, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if cond():
            return True
        time.sleep(0.05)
    return False


def _epochs(path):
    try:
        return json.loads(path.read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow
def test_train_killed_twice_ends_with_the_uninterrupted_metrics(tmp_path, data):
    args = ["train", "--data", str(data), "--method", "momke", "--condition", "at", "--fold",
            "0", "--set", "train.epochs=[4,12]", "--set", "model.hidden=16", "--set",
            "model.depth=1", "--no-progress"]
    cut = tmp_path / "cut"
    shared, cell = cut / "fold0" / "_shared" / "unimodal" / "last.json", cut / "fold0" / "at"
    for stop in (lambda: _epochs(shared) >= 2, lambda: _epochs(cell / "last.json") >= 7):
        proc = subprocess.Popen([sys.executable, "-m", "hardymer.cli.main", *args, "--out",
                                 str(cut)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert _wait_for(stop, proc), "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (cell / "result.json").exists()
    assert invoke(*args, "--out", cut).exit_code == 0
    assert invoke(*args, "--out", tmp_path / "whole").exit_code == 0
    got = json.loads((cell / "result.json").read_text())
    want = json.loads((tmp_path / "whole" / "fold0" / "at" / "result.json").read_text())
    keys = [k for k in want if k.startswith(("val_", "test_"))] + ["selected_epoch"]
    assert {k: got[k] for k in keys} == {k: want[k] for k in keys}


SWEEP_SETS = ["momke:train.epochs=[1,2]", "momke:model.hidden=16", "momke:model.depth=1",
              "zero-fill:train.epochs=[3]", "train.lr=1e-3", "train.batch_size=8"]


@pytest.mark.slow
def test_sweep_killed_mid_unit_resumes_to_the_uninterrupted_result(tmp_path):
    """A real kill (SIGKILL of the CLI process) after a unit's first cell finished but before
    the unit's rows reached the store; the same command again ends identical to a sweep that
    was never interrupted."""
    args = ["sweep", "--data", "synth:tiny", "--methods", "momke,zero-fill", "--conditions",
            "at,random:0.4", "--seeds", "0,1", "--folds", "0", "--no-progress", "--no-report"]
    for s in SWEEP_SETS:
        args += ["--set", s]
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "hardymer.cli.main", *args, "--out", str(cut)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = cut / "results.sqlite"

    def mid_unit():
        stored = len(ResultsStore(db)) if db.is_file() else 0
        finished = len(list(cut.glob("runs/*/seed*/fold0/*/result.json")))
        return 2 <= stored < 8 and finished > stored
    assert _wait_for(mid_unit, proc), "no moment inside a unit was caught"
    proc.kill()
    proc.wait()
    assert len(ResultsStore(db)) < 8
    res = runner.invoke(app, [*args, "--out", str(cut)])
    assert res.exit_code == 0, res.output
    spec = load_spec(None, data="synth:tiny", methods=["momke", "zero-fill"],
                     conditions=["at", "random:0.4"], seeds=[0, 1], folds="0", set=SWEEP_SETS)
    whole = run_sweep(spec, tmp_path / "whole", progress=False).frame()
    got = ResultsStore(db).frame()
    cols = ["variant", "condition", "fold", "seed", "test_WA", "test_UA", "val_WA"]
    pd.testing.assert_frame_equal(got[cols].reset_index(drop=True),
                                  whole[cols].reset_index(drop=True))
