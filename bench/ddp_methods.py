"""Every method on 2 gloo processes against one process: the largest weight difference.

The family test of ``tests/test_distributed.py`` (tiny preset, dropout off, the methods' small
test sizes, ``train.batch_size=3``: uneven shares and a one-sequence last batch), run for each
named method: prints the largest difference between the cell's weights after a 2-process and
a 1-process fit, both test WAs, and how many writes rank 1 made under the run folder (0).
The figures are the table in docs/scale.md.

    python bench/ddp_methods.py                 # all 14 methods (about 3 min on 2 cores)
    python bench/ddp_methods.py momke gcnet
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_distributed as td  # noqa: E402  (the test's two-process harness)
from hardymer.models import list_methods  # noqa: E402


def main(names: list[str]) -> None:
    root = Path(tempfile.mkdtemp(prefix="ddp-methods-"))
    try:
        for name in names:
            tmp = root / name
            tmp.mkdir()
            sets = td._family_sets(name)
            out, reports = td._two_processes(tmp, name, sets, ["at"])
            one = td._run(td.SINGLE, tmp / "one", name, sets, ["at"])
            wa, wb = td._weights(out / "fold0" / "at"), td._weights(tmp / "one" / "fold0" / "at")
            worst = max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa)
            print(f"{name:12s} largest weight difference {worst:.1e}  test WA "
                  f"{reports[0]['records'][0]['test_WA']:.4f} (2 processes) "
                  f"{one[0]['test_WA']:.4f} (1)  rank-1 writes {len(reports[1]['writes'])}",
                  flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:] or sorted(list_methods()))
