"""Is a local SQLite tracking store file an MLflow store? Asked read-only, before MLflow opens it;
and which of a study's runs it holds finished, read without MLflow.

MLflow opens any SQLite file it is given and, finding no MLflow tables there, creates them: an
empty file or another program's database would be silently turned into (or mixed with) a new
store, and a damaged file fails deep inside SQLAlchemy with a long traceback. This module looks
first, with SQLite's own read-only mode, and answers with one line that names the file.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

from dlf.errors import DLFError

SEED, PARENT = "seed", "parent"  # the values of a run's dlf.level tag
# Tables every MLflow SQLite store has had since its first schema version.
MLFLOW_TABLES = frozenset({"experiments", "runs", "alembic_version"})


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` URI, else None (a server or another database)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///")).expanduser()


def damaged_store(path: Path, reason: str) -> str:
    """The one line for a store that cannot be used as it is (nothing was written to it)."""
    return (f"{path}: {reason}; it was left untouched: restore it from a backup, or point --tracking-uri "
            f"at a fresh store (e.g. sqlite:///{path.parent.resolve() / 'mlflow-new.db'})")


def check_store_file(uri: str) -> str | None:
    """None when ``uri`` is not a SQLite file, does not exist yet, is empty (a store whose creation
    never got to its first write) or holds MLflow's tables; else the reason it is unusable."""
    path = sqlite_path(uri)
    if path is None or not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            con.close()
    except sqlite3.OperationalError:  # locked, unreadable, a hot journal: MLflow reports it itself
        return None
    except sqlite3.DatabaseError as err:  # not a database, or damaged (malformed, truncated)
        return damaged_store(path, f"not a readable SQLite database ({err})")
    missing = MLFLOW_TABLES - tables
    if missing:
        shown = ", ".join(sorted(tables)[:5]) or "none"
        return (f"{path}: a SQLite database but not an MLflow store (no {', '.join(sorted(missing))} "
                f"table; it has: {shown}); it was left untouched: point --tracking-uri at an MLflow "
                f"store (e.g. sqlite:///{path.parent.resolve() / 'mlflow-new.db'})")
    return None


def store_error(uri: str, err: BaseException) -> DLFError:
    """The one line for an error raised while using a store: a damaged SQLite file is named, with
    what to do about it; anything else names the URI and the error."""
    lines = str(err).strip().splitlines()
    what = f"{type(err).__name__}: {lines[0] if lines else ''}"
    path = sqlite_path(uri)
    if path is not None and any(s in what.lower() for s in ("malformed", "not a database")):
        return DLFError(damaged_store(path, f"damaged SQLite database ({what})"))
    return DLFError(f"tracking store {uri}: {what}; check --tracking-uri / MLFLOW_TRACKING_URI")


_FAST_FROM = (
    "FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id "
    "JOIN tags l ON l.run_uuid = r.run_uuid AND l.key = 'dlf.level' {joins} "
    "WHERE e.name = ? AND e.lifecycle_stage = 'active' AND r.lifecycle_stage = 'active' AND l.value = ?"
)
_FAST_SEEDS = ("SELECT k.value, r.run_uuid " + _FAST_FROM.format(
    joins="JOIN tags k ON k.run_uuid = r.run_uuid AND k.key = 'dlf.run_key'") + " AND r.status = 'FINISHED'")
_FAST_PARENTS = ("SELECT v.value, d.value, r.status " + _FAST_FROM.format(
    joins="JOIN tags v ON v.run_uuid = r.run_uuid AND v.key = 'dlf.variant' "
          "JOIN tags d ON d.run_uuid = r.run_uuid AND d.key = 'dlf.dataset'"))


def sqlite_finished(uri: str, experiment: str) -> tuple[dict[str, str], dict[tuple[str, str], str]] | None:
    """Read-only look at a local SQLite store without importing MLflow (which costs ~2.5 s):
    ({run key: run id} of active FINISHED seed runs, {(variant, dataset): parent run status}).

    Lets a fully cached re-run return at once. None when it cannot tell (another backend, no
    file yet, an unexpected schema): the caller then asks MLflow as usual.
    """
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///")).expanduser()
    if not db.is_file():
        return None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            seeds = con.execute(_FAST_SEEDS, (experiment, SEED)).fetchall()
            parents = con.execute(_FAST_PARENTS, (experiment, PARENT)).fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return dict(seeds), {(v, d): status for v, d, status in parents}
