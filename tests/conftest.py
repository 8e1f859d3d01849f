import os
import tempfile

import numpy as np
import pandas as pd
import pytest
import torch

from hardymer.data.dataset import MERDataset

torch.set_num_threads(2)
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


BROWSER = next((b for b in map(__import__("shutil").which,
                               ("chromium", "chromium-browser", "google-chrome")) if b), None)
DRIVER = __import__("shutil").which("chromedriver")


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
