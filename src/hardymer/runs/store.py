"""The results store of runs and sweeps: one SQLite file, one row per finished cell.

A *cell* is one (variant, data set, condition, fold, seed). A run folder has one store
(``RUN/results.sqlite``; variant = its method), a sweep one over all its runs. A row holds
everything needed to trust and reproduce the number: the variant's method and full config, the
selection protocol, the metrics of the selected model on validation and test, timings, and
library versions. SQLite makes each insert atomic (a row is there whole or not at all) and the
file queryable with any SQLite tool::

    sqlite3 SWEEP/results.sqlite "select variant, condition, avg(test_WA) from cells group by 1, 2"

Metric columns (``val_WA``, ``test_UA``, …) are added as they first appear, so classification
and regression cells can share a store.
"""
from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pandas as pd

KEY = ("variant", "data", "condition", "fold", "seed")
_FIXED = {
    "variant": "TEXT NOT NULL", "method": "TEXT NOT NULL", "data": "TEXT NOT NULL",
    "dataset": "TEXT", "task": "TEXT", "family": "TEXT", "n_classes": "INTEGER",
    "generated": "INTEGER", "n_dropped": "INTEGER", "condition": "TEXT NOT NULL",
    "fold": "INTEGER NOT NULL", "fold_name": "TEXT", "fold_scheme": "TEXT",
    "seed": "INTEGER NOT NULL", "protocol": "TEXT NOT NULL", "finetune_scope": "TEXT",
    "selected_epoch": "INTEGER", "seconds": "REAL", "n_train": "INTEGER", "n_test": "INTEGER",
    "config": "TEXT", "versions": "TEXT", "run_dir": "TEXT", "finished_at": "TEXT",
}


def results_row(record: dict, *, variant: str, method: str, data: str, config: dict,
                meta: dict, versions: dict, run_dir: str) -> dict:
    """The store's row of one result record (:func:`hardymer.runs.experiment.run_cell`)
    of a run of ``variant`` (``method`` with overrides) on ``data``; ``meta`` holds the data
    set's columns (dataset, task, family, n_classes, generated)."""
    return {"variant": variant, "method": method, "data": data,
            "condition": record["condition"], "fold": record["fold"],
            "fold_name": record.get("fold_name"), "fold_scheme": record.get("fold_scheme"),
            "seed": record["seed"],
            "protocol": record["protocol"], "finetune_scope": record.get("finetune_scope"),
            "selected_epoch": record.get("selected_epoch"),
            "seconds": record.get("seconds"), "n_train": record.get("n_train"),
            "n_test": record.get("n_test"), "config": config, "run_dir": run_dir,
            **meta, "versions": versions,
            **{k: v for k, v in record.items() if k.startswith(("val_", "test_"))}}


class ResultsStore:
    """Rows of finished cells in ``path`` (created on first use).

    Parameters
    ----------
    path : Path
        The SQLite file, e.g. ``SWEEP/results.sqlite``.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as con, con:
            con.execute("PRAGMA journal_mode=WAL")
            cols = ", ".join(f'"{k}" {v}' for k, v in _FIXED.items())
            con.execute(f"CREATE TABLE IF NOT EXISTS cells ({cols}, "
                        f"PRIMARY KEY ({', '.join(KEY)}))")
            have = set(self._columns(con))  # a store from an older version: add new columns
            for k, v in _FIXED.items():
                if k not in have:
                    con.execute(f'ALTER TABLE cells ADD COLUMN "{k}" {v.replace(" NOT NULL", "")}')

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=120)

    def _columns(self, con) -> list[str]:
        return [r[1] for r in con.execute("PRAGMA table_info(cells)")]

    def add(self, row: dict, replace: bool = True) -> None:
        """Insert (or replace) one finished cell (atomic)."""
        self.add_many([row], replace)

    def add_many(self, rows: list[dict], replace: bool = True) -> None:
        """Insert finished cells in one transaction: all of them or none. With
        ``replace=False`` a cell already in the store keeps its row (and finish time)."""
        prepared = []
        for row in rows:
            missing = [k for k in KEY + ("method", "protocol") if row.get(k) is None]
            if missing:
                raise ValueError(f"a results row needs {missing}; got keys {sorted(row)}")
            row = dict(row)
            for k in ("config", "versions"):
                if k in row and not isinstance(row[k], str):
                    row[k] = json.dumps(row[k], sort_keys=True)
            row.setdefault("finished_at", time.strftime("%Y-%m-%dT%H:%M:%S"))
            prepared.append(row)
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        with closing(self._connect()) as con, con:
            have = set(self._columns(con))
            for row in prepared:
                for k, v in row.items():
                    if k not in have:  # a metric seen for the first time
                        if not (k.startswith(("val_", "test_")) and isinstance(v, (int, float))):
                            raise ValueError(f"unknown results column {k!r}")
                        con.execute(f'ALTER TABLE cells ADD COLUMN "{k}" REAL')
                        have.add(k)
                names = list(row)
                cols = ", ".join(f'"{n}"' for n in names)
                con.execute(f"{verb} INTO cells ({cols}) "
                            f"VALUES ({', '.join('?' for _ in names)})", [row[n] for n in names])

    def keys(self) -> set[tuple]:
        """The KEY tuples of every finished cell."""
        with closing(self._connect()) as con:
            return {tuple(r) for r in con.execute(f"SELECT {', '.join(KEY)} FROM cells")}

    def frame(self) -> pd.DataFrame:
        """All rows as a DataFrame (config and versions as JSON text)."""
        with closing(self._connect()) as con:
            return pd.read_sql_query("SELECT * FROM cells ORDER BY variant, data, condition, "
                                     "fold, seed", con)

    def records(self) -> list[dict]:
        """Rows as result records (``method`` = the variant's display name, test_* metrics),
        the shape :func:`hardymer.reports.tables.summarize` reads."""
        df = self.frame()
        out = []
        for row in df.to_dict("records"):
            rec = {k: v for k, v in row.items() if not (isinstance(v, float) and pd.isna(v))}
            rec["base_method"], rec["method"] = rec["method"], rec["variant"]
            out.append(rec)
        return out

    def __len__(self) -> int:
        with closing(self._connect()) as con:
            return int(con.execute("SELECT COUNT(*) FROM cells").fetchone()[0])
