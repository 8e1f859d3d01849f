"""The house rules that are not behaviour: layers drawn from the real imports, no method
named outside its own module, one version, one registry, atomic writes through fileio."""
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import hardymer
from hardymer.cli.main import app
from hardymer.data import open_data
from hardymer.fileio import atomic_folder, atomic_path, atomic_save_npy
from hardymer.models import METHODS
from hardymer.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "hardymer"


def test_architecture_picture_matches_the_imports():
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "architecture.py"), "--check"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_no_method_is_named_outside_its_own_module():
    """Extras come from the method class; no `method == "name"` test elsewhere."""
    names = "|".join(re.escape(n) for n in METHODS.names())
    pattern = re.compile(rf"""(==|!=)\s*["']({names})["']|["']({names})["']\s*(==|!=)""")
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if line.lstrip().startswith((">>>", "...")):
                continue  # doctest examples query the published table by method, not code
            m = pattern.search(line)
            if m and not str(rel).startswith(f"models/{m.group(2) or m.group(3)}"):
                offenders.append(f"{rel}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_teacher_is_a_helper_not_a_method():
    assert "hardymer-teacher" not in METHODS
    assert not any("teacher" in n for n in METHODS.names())


def test_one_version_from_the_installed_metadata():
    assert hardymer.__version__ == version("hardymer")


def test_registry_refuses_two_classes_under_one_name():
    reg = Registry("widget", "widget_name")

    @reg.register("a")
    class A:
        pass

    assert reg.get("a") is A and A.widget_name == "a" and reg.names() == ["a"]
    with pytest.raises(ValueError, match="widget name 'a' is already registered"):
        reg.register("a")(type("B", (), {}))
    with pytest.raises(KeyError, match="unknown widget 'b'; registered: a"):
        reg.get("b")


def test_atomic_writes_leave_the_old_file_or_the_new_one(tmp_path):
    target = tmp_path / "x.npy"
    atomic_save_npy(target, np.arange(3))
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.suffix == ".npy" and tmp.parent == tmp_path
            np.save(tmp, np.zeros(5))
            raise RuntimeError("killed mid-write")
    assert np.load(target).tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["x.npy"]   # no temporary left behind
    folder = tmp_path / "d"
    with atomic_folder(folder) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_folder(folder) as tmp:
            (tmp / "a.txt").write_text("2")
            raise RuntimeError("killed mid-write")
    assert (folder / "a.txt").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "x.npy"]


def test_a_folder_replaces_a_file_and_a_file_a_file(tmp_path):
    from hardymer.fileio import swap_into_place
    (tmp_path / "x").write_text("old file")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "a").write_text("1")
    swap_into_place(tmp_path / "new", tmp_path / "x")
    assert (tmp_path / "x" / "a").read_text() == "1"
    (tmp_path / "f").write_text("old")
    (tmp_path / "g").write_text("new")
    swap_into_place(tmp_path / "g", tmp_path / "f")
    assert (tmp_path / "f").read_text() == "new" and not (tmp_path / "g").exists()


def test_synth_set_parses_values_like_train_set(tmp_path):
    res = CliRunner().invoke(app, ["synth", "tiny", "--out", str(tmp_path / "d"),
                                   "--set", "name=foo", "--set", "direct_fraction=0"])
    assert res.exit_code == 0, res.output
    ds = open_data(str(tmp_path / "d"))
    assert ds.name == "foo"


def test_package_api_is_lazy_and_complete():
    for name in ("extract", "load", "train", "sweep", "report"):
        assert callable(getattr(hardymer, name))
    code = "import hardymer, sys; print('hardymer.api' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False"   # loaded on first use, not by `import hardymer`
