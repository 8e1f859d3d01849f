"""Larger than memory: memory-mapped data are read in chunks, never copied whole, and give the
same numbers as data held in memory (standardisation, the feature database, the plan's
retrieval, HARDY-MER's fine-tuning, a whole run)."""
import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest

import hardymer
from hardymer.data.generic import read_generic, write_generic
from hardymer.data.rows import RowView
from hardymer.data.standardize import FoldScaler, fold_inputs
from hardymer.protocol.splits import make_folds
from hardymer.retrieval import FeatureDatabase

from conftest import make_toy


def _mapped(tmp_path, ds):
    write_generic(ds, tmp_path / "data")
    return read_generic(tmp_path / "data", mmap=True)


def _peak_numpy_bytes(fn):
    """Peak bytes traced during ``fn()`` (NumPy reports its buffers to tracemalloc)."""
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_chunked_standardisation_equals_whole_and_stays_small(tmp_path):
    rng = np.random.default_rng(0)
    n, d = 40_000, 64
    x = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.float32, (n, d))
    x[:] = rng.normal(3.0, 2.0, (n, d)).astype(np.float32)
    x.flush()
    x = np.load(tmp_path / "x.npy", mmap_mode="r")
    avail = rng.random((n, 1)) > 0.1
    ds = SimpleNamespace(modalities=("a",), dims={"a": d}, features={"a": x}, available=avail)
    train = np.arange(0, n, 2)
    whole = FoldScaler.fit(ds, train, chunk=n)
    scaler, peak = _peak_numpy_bytes(lambda: FoldScaler.fit(ds, train, chunk=1000))
    np.testing.assert_allclose(scaler.mean["a"], whole.mean["a"], rtol=1e-12)
    np.testing.assert_allclose(scaler.std["a"], whole.std["a"], rtol=1e-12)
    ref = np.asarray(x, np.float64)[train[avail[train, 0]]]
    np.testing.assert_array_equal(whole.mean["a"], ref.mean(0))   # one chunk: NumPy's own
    np.testing.assert_array_equal(whole.std["a"], ref.std(0))
    assert peak < 0.25 * len(ref) * d * 8, peak   # a chunk at a time, not the training rows
    out, peak = _peak_numpy_bytes(lambda: scaler.transform({"a": x}, avail, ("a",),
                                                           out=tmp_path / "z", chunk=1000))
    assert isinstance(out["a"], np.memmap) and peak < 0.25 * n * d * 4, peak   # no (N, d)
    mem = scaler.transform({"a": x}, avail, ("a",))["a"]
    np.testing.assert_array_equal(np.asarray(out["a"]), mem)
    assert (mem[~avail[:, 0]] == 0).all()


def test_fold_inputs_of_mapped_data_go_to_disk_and_come_back(tmp_path):
    ds = _mapped(tmp_path, make_toy())
    fold = make_folds(ds)[0]
    mem, s1 = fold_inputs("true", read_generic(tmp_path / "data"), fold.train)
    disk, s2 = fold_inputs("true", ds, fold.train, tmp_path / "std")
    for m in ds.modalities:
        assert isinstance(disk.features[m], np.memmap)
        np.testing.assert_array_equal(np.asarray(disk.features[m]), mem.features[m])
    np.testing.assert_array_equal(s1.mean["a"], s2.mean["a"])
    assert (tmp_path / "std" / "standardized.json").is_file()
    again, _ = fold_inputs("true", ds, fold.train, tmp_path / "std")    # read back
    assert again.features["a"].filename == disk.features["a"].filename
    other, _ = fold_inputs("true", ds, make_folds(ds)[1].train, tmp_path / "std")
    assert not np.array_equal(np.asarray(other.features["a"]), mem.features["a"])


def test_row_view_reads_rows_of_its_base():
    base = np.arange(40, dtype=np.float32).reshape(10, 4)
    rows = np.array([7, 2, 5])
    v = RowView(base, rows)
    assert v.shape == (3, 4) and len(v) == 3 and v.ndim == 2 and v.dtype == np.float32
    np.testing.assert_array_equal(v[1], base[2])
    np.testing.assert_array_equal(v[1:], base[[2, 5]])
    np.testing.assert_array_equal(v[np.array([2, 0])], base[[5, 7]])
    np.testing.assert_array_equal(np.asarray(v), base[rows])
    with pytest.raises(IndexError):
        RowView(base, np.array([10]))
    with pytest.raises(TypeError):
        v[0, 1]


@pytest.mark.parametrize("kind", ["flat", "ivfpq"])
def test_database_over_a_row_view_equals_one_over_the_copy(tmp_path, kind):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    rows = np.sort(rng.choice(3000, 2000, replace=False))
    kw = dict(ids=rows, kind=kind, nlist=8, pq_m=4, chunk_rows=300)
    view = FeatureDatabase.build({"a": RowView(mm, rows)}, **kw)
    copy = FeatureDatabase.build({"a": x[rows]}, **kw)
    q = rng.normal(size=(50, 32)).astype(np.float32)
    for got, want in zip(view.search("a", q, 5), copy.search("a", q, 5)):
        np.testing.assert_array_equal(got, want)


def test_hardymer_on_mapped_data_equals_in_memory(tmp_path, tiny, monkeypatch):
    """The whole HARDY-MER pipeline (standardisation, fine-tuning read batch by batch from the
    map, teacher, database over a row view, chunked plan retrieval) on a memory map: the same
    numbers as in memory; the standardised scratch copy is removed with the fold."""
    import hardymer.models.hardymer.plan as plan
    write_generic(tiny, tmp_path / "data")
    over = ["model.hidden=16", "model.depth=1", "model.teacher_epochs=[1,1]",
            "model.finetune_epochs=2", "train.epochs=[1,1]", "train.standardize=true"]
    mem = hardymer.train(read_generic(tmp_path / "data"), "hardymer", ["at"], folds=[0],
                         out=tmp_path / "mem", overrides=over, progress=False)
    monkeypatch.setattr(plan.rank_candidates, "__defaults__",   # several query chunks
                        plan.rank_candidates.__defaults__[:-1] + (7,))
    mapped = hardymer.train(str(tmp_path / "data"), "hardymer", ["at"], folds=[0],
                            out=tmp_path / "map", overrides=over, progress=False)
    assert mapped[0]["test_WA"] == mem[0]["test_WA"] and mapped[0]["val_F1"] == mem[0]["val_F1"]
    ft = tmp_path / "map" / "fold0" / "_shared" / "hardymer" / "finetune"
    np.testing.assert_array_equal(np.load(ft / "a.npy"),
                                  np.load(tmp_path / "mem" / ft.relative_to(tmp_path / "map")
                                          / "a.npy"))
    assert not (tmp_path / "map" / "fold0" / "_shared" / "standardized").exists()
    p_mem = sorted((tmp_path / "mem").rglob("plan-*.npz"))
    p_map = sorted((tmp_path / "map").rglob("plan-*.npz"))
    assert p_mem and len(p_mem) == len(p_map)
    for a, b in zip(p_mem, p_map):
        za, zb = np.load(a), np.load(b)
        for key in za.files:
            np.testing.assert_array_equal(za[key], zb[key])
