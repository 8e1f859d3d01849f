import os
import shutil
import tempfile

import numpy as np
import pandas as pd
import pytest
import torch

from hardymer.data.dataset import MERDataset

# HARDYMER_TEST_THREADS=1 for a test run beside another torch job (OpenMP spin-waits).
# Under pytest-xdist (the default run: two workers on two cores) each worker gets one thread.
torch.set_num_threads(int(os.environ.get("HARDYMER_TEST_THREADS",
                                         "1" if "PYTEST_XDIST_WORKER" in os.environ else "2")))
# Data digests are cached per user (data/fingerprint.py): tests (and the CLI processes they
# start, which inherit this) use a folder of their own, not ~/.cache.
os.environ.setdefault("HARDYMER_CACHE", tempfile.mkdtemp(prefix="hardymer-cache-"))


def make_toy(n_seq=30, dims=(6, 10, 6), strength=(1.0, 1.5, 0.5), seed=0, task="classification",
             sessions=5):
    """A small labelled data set in code (independent of the generator under test)."""
    rng = np.random.default_rng(seed)
    rows, n = [], 0
    for s in range(n_seq):
        for p in range(int(rng.integers(3, 10))):
            rows.append(dict(utterance_id=f"d{s:02d}_u{p:02d}", sequence_id=f"d{s:02d}",
                             position=p, speaker="FM"[p % 2], split="", session=s % sessions + 1))
            n += 1
    df = pd.DataFrame(rows)
    y = rng.integers(0, 4, n)
    feats = {}
    for m, d, w in zip("atv", dims, strength):
        proto = rng.normal(size=(4, d))
        feats[m] = (proto[y] * w + rng.normal(size=(n, d))).astype(np.float32)
    labels = y if task == "classification" else (y.astype(np.float32) - 1.5)
    return MERDataset("toy", task, ("a", "t", "v"), feats, np.ones((n, 3), bool), labels, df,
                      class_names=("w", "x", "y", "z") if task == "classification" else None,
                      meta={"family": "iemocap"})


@pytest.fixture
def toy():
    return make_toy()


BROWSER = next((b for b in map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))
                if b), None)
DRIVER = shutil.which("chromedriver")


@pytest.fixture
def chrome():
    """Headless Chromium through Selenium (tests marked ``browser``); skips without them."""
    if not (BROWSER and DRIVER):
        pytest.skip("needs Chromium and chromedriver (Debian: apt-get install chromium "
                    "chromium-driver; .ci/run installs them if it can)")
    webdriver = pytest.importorskip("selenium.webdriver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = BROWSER
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER),
                              options=opts)
    yield driver
    driver.quit()


def console_errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def cell_texts(driver, rows_css: str) -> list[list[str]]:
    """The visible text of every cell of the rows matching ``rows_css``, read in one script
    call (a WebDriver call per cell made the explorer tests spend ~40 s in round trips)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(r =>"
        " Array.from(r.querySelectorAll(':scope > td')).map(td => td.innerText.trim()))",
        rows_css)


class Killed(Exception):
    """Raised by a test to stop a run mid-way, as a kill would."""


def killed_and_resumed(method_cls, run, kill_at: int, monkeypatch):
    """``run(folder)`` once uninterrupted, once killed at the start of epoch ``kill_at`` (after
    the method's ``on_epoch_start``) and then re-run into the same folder; returns both
    results (the ``full`` and the ``resumed``)."""
    original = method_cls.on_epoch_start
    full = run("full")

    def dying(self, epoch, stage, data):
        original(self, epoch, stage, data)
        if epoch == kill_at:
            raise Killed
    monkeypatch.setattr(method_cls, "on_epoch_start", dying)
    with pytest.raises(Killed):
        run("cut")
    monkeypatch.setattr(method_cls, "on_epoch_start", original)
    return full, run("cut")


# HARDY-MER at a tiny budget, one fold prepared once per module (test_hardymer, test_curriculum)
HARDY_SMALL = ["model.hidden=16", "model.depth=1", "model.teacher_epochs=[1,2]",
               "model.finetune_epochs=2", "train.epochs=[1,2]", "train.lr=1e-3"]


@pytest.fixture(scope="module")
def tiny():
    from hardymer.data.synthetic import generate
    return generate("tiny", seed=0)


@pytest.fixture(scope="module")
def prepared(tiny):
    from hardymer.protocol import make_folds
    from hardymer.runs.config import load_run_config
    from hardymer.runs.experiment import prepare_fold
    cfg = load_run_config("hardymer", tiny.family, HARDY_SMALL)
    fold = make_folds(tiny)[0]
    return cfg, fold, prepare_fold(cfg, tiny, fold, None, progress=False)
