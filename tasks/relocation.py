"""A moved or copied workdir's embedded MLflow store points at its own artifacts, never the original's.

MLflow keeps absolute artifact locations in its database: the experiment's (``<workdir>/mlartifacts``, set by
:func:`tasks.tracking.ensure_experiment`), every run's, every logged model's and every registered version's.
After ``cp -r A B`` a pipeline on B would log its artifacts into A's folder and load ``models:/...`` from A's
files; after ``mv A B`` MLflow would recreate A. :func:`rebase_mlflow_store` rewrites those locations from the
old ``<workdir>/mlartifacts`` prefix to this workdir's, in one transaction (call it under the workdir lock).
Params, tags and dataset sources keep what they said when the run was made (history, never read back).
``tasks.model_uri.resolve`` does the same before it reads ``models:/`` or ``runs:/`` from the embedded store, so
``coala score`` and ``coala generate`` on a copied workdir load its own head files.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from coala_core.errors import StoreError

#: (table, column) holding artifact locations, whichever of them this MLflow version's schema has
LOCATION_COLUMNS = [("experiments", "artifact_location"), ("runs", "artifact_uri"),
                    ("logged_models", "artifact_location"), ("model_versions", "storage_location"),
                    ("model_versions", "source")]


def rebase_mlflow_store(workdir: str | Path) -> dict[str, int]:
    """Rewrite the embedded store's artifact locations under an old ``.../mlartifacts`` to this workdir's.

    Returns ``{old location: rows rewritten}`` (empty when nothing was moved, when ``MLFLOW_TRACKING_URI``
    names another store, or when the workdir has no ``mlflow.db`` yet).
    """
    from tasks.tracking import default_tracking_uri, tracking_uri

    wd = Path(workdir).resolve()
    if tracking_uri(wd) != default_tracking_uri(wd):  # a tracking server or another store: not ours to rewrite
        return {}
    db = wd / "mlflow.db"
    if not db.is_file():
        return {}
    new = (wd / "mlartifacts").as_uri()
    con = sqlite3.connect(str(db), timeout=60)
    try:
        have = {(t, c) for t, c in LOCATION_COLUMNS
                if c in {row[1] for row in con.execute(f"PRAGMA table_info({t})")}}  # noqa: S608 - fixed names
        if ("experiments", "artifact_location") not in have:
            return {}
        olds = sorted({loc for (loc,) in con.execute("SELECT artifact_location FROM experiments")
                       if loc and loc.rstrip("/").endswith("/mlartifacts") and loc.rstrip("/") != new})
        done: dict[str, int] = {}
        if not olds:
            return done
        try:
            _rewrite(con, sorted(have), olds, new, done)
        except sqlite3.OperationalError as err:
            raise StoreError(f"{db}: this workdir was moved or copied, and its MLflow store still points at "
                             f"{olds[0]}; it could not be rewritten ({err})") from None
        return done
    finally:
        con.close()


def _rewrite(con: sqlite3.Connection, columns: list[tuple[str, str]], olds: list[str], new: str,
             done: dict[str, int]) -> None:
    with con:  # one transaction: every location moves, or none
        for old in olds:
            old = old.rstrip("/")
            n = 0
            for table, column in columns:
                cur = con.execute(
                    f"UPDATE {table} SET {column} = ? || substr({column}, ?) "  # noqa: S608 - fixed names
                    f"WHERE {column} = ? OR substr({column}, 1, ?) = ?",
                    (new, len(old) + 1, old, len(old) + 1, old + "/"))
                n += cur.rowcount
            done[old] = n
