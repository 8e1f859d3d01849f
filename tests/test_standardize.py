"""Per-fold standardisation: training statistics only, masks kept, auto = extracted data."""
from dataclasses import replace

import numpy as np
import pytest

from hardymer.data.standardize import FoldScaler, fold_inputs, standardize_wanted
from hardymer.protocol.splits import make_folds

from conftest import make_toy


def test_training_statistics_only_and_masks_kept():
    ds = make_toy()
    ds.available[::7, 1] = False
    fold = make_folds(ds)[0]
    std, scaler = fold_inputs("true", ds, fold.train)
    train = ds.rows_of(fold.train)
    for j, m in enumerate(ds.modalities):
        rows = train[ds.available[train, j]]
        np.testing.assert_allclose(std.features[m][rows].mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(std.features[m][rows].std(0), 1, atol=1e-4)
        assert (std.features[m][~ds.available[:, j]] == 0).all()
    np.testing.assert_array_equal(std.available, ds.available)
    # Changing test rows changes nothing in the statistics (no peeking at the test split).
    test = ds.rows_of(fold.test)
    feats = {m: np.array(x) for m, x in ds.features.items()}
    feats["a"][test] += 100.0
    again = FoldScaler.fit(replace(ds, features=feats), train)
    np.testing.assert_array_equal(again.mean["a"], scaler.mean["a"])
    # A constant dimension is centred, not divided by zero.
    feats["v"][:, 0] = 3.0
    z = FoldScaler.fit(replace(ds, features=feats), train)
    assert z.std["v"][0] == 1.0


def test_auto_follows_the_data_source():
    ds = make_toy()
    assert not standardize_wanted("auto", ds)
    assert standardize_wanted("auto", replace(ds, meta={"extraction": {"extractors": {}}}))
    assert standardize_wanted("on", ds) and not standardize_wanted(False, ds)
    with pytest.raises(ValueError, match="train.standardize"):
        standardize_wanted("maybe", ds)
    same, scaler = fold_inputs("auto", ds, make_folds(ds)[0].train)
    assert same is ds and scaler is None


def test_runs_from_before_standardize_keep_raw_features():
    from hardymer.runs.config import RunConfig
    old = {"method": "momke", "model": {}, "train": {"epochs": [1, 1]}}
    assert RunConfig.from_dict(old).train.standardize == "false"
    assert RunConfig.from_dict({**old, "train": {"standardize": "auto"}}).train.standardize \
        == "auto"


def test_resuming_on_changed_data_is_refused(tmp_path):
    from hardymer.protocol import parse_condition
    from hardymer.runs.config import load_run_config
    from hardymer.runs.experiment import run_experiment
    ds = make_toy(n_seq=10)
    cfg = load_run_config("zero-fill", ds.family, ["train.epochs=[1]"])
    cond = [parse_condition("at", ds.modalities)]
    run_experiment(cfg, ds, cond, [0], out=tmp_path, data_source="toy", progress=False)
    run_experiment(cfg, ds, cond, [0], out=tmp_path, data_source="toy", progress=False)
    changed = replace(ds, labels=np.roll(ds.labels, 1))
    with pytest.raises(ValueError, match="changed since"):
        run_experiment(cfg, changed, cond, [0], out=tmp_path, data_source="toy",
                       progress=False)
