"""The cluster work queue: one PostgreSQL table of run specs that any number of workers claim.

One row per (study, run key) (docs/cluster.md): like a local ``run``, which
looks for finished keys in the study's own experiment, a configuration shared by two studies is
trained once for each. Every state change is one short transaction, and the database clock
(``now()``) is the only clock, so hosts need not agree on time:

* enqueue: insert ``pending`` rows; a row already there keeps its state, except ``failed``,
  which goes back to ``pending`` with its attempts reset (re-running a study retries failures).
* claim: ``UPDATE ... WHERE (study, key) = (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1)``: a
  pending row, or a running row whose owner has not heartbeaten for the ``stale_s`` that owner
  declared when it claimed (its run is reclaimed: another attempt, by another worker). The claim
  is the lock: two workers never hold the same row.
* heartbeat / finish / fail / release only touch a row this worker still owns
  (``worker = me AND state = 'running'``), so a worker that lost its claim cannot overwrite the
  reclaimer's result.
"""
from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

from dlf.errors import DLFError
from dlf.cluster.queue_schema import CLAIM, MINE, REAP, STATES, TABLE, ensure_schema

IDLE_PING_S = 10.0  # check a connection that sat idle this long before using it


@dataclass(frozen=True)
class Claim:
    """A run this worker now owns; ``spec`` is whatever the claim's ``decode`` made of the JSON."""

    key: str
    study: str
    name: str
    spec: Any
    tracking_uri: str | None
    attempts: int
    max_attempts: int


@dataclass(frozen=True)
class QueueRow:
    key: str
    study: str
    name: str
    state: str
    worker: str | None
    workers: tuple[str, ...]
    attempts: int
    max_attempts: int
    heartbeat_age: float | None  # seconds since the last heartbeat (database clock)
    run_id: str | None
    seconds: float | None
    error: str | None


def _mine(claim: Claim, worker: str, **more: Any) -> dict[str, Any]:
    """The parameters of ``MINE``: the claim's row, owned by ``worker``."""
    return {"study": claim.study, "key": claim.key, "worker": worker, **more}


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def check_url(url: str, option: str = "--queue") -> str:
    if not url.startswith(("postgresql://", "postgres://", "postgresql+psycopg2://")):
        raise DLFError(f"{option} {redact(url)}: not a PostgreSQL URL; give one like "
                       "postgresql://user:password@host:5432/dbname")
    return url.replace("postgresql+psycopg2://", "postgresql://", 1)


def sqlalchemy_url(url: str) -> str:
    """``postgresql://`` for SQLAlchemy users (Optuna, MLflow): SQLAlchemy 2.1 maps the bare scheme
    to psycopg 3, so name psycopg2 (the ``cluster`` extra) unless psycopg 3 is installed."""
    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres") or not sep:
        return url
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return f"postgresql+psycopg2://{rest}"
    return url


def connect(url: str, option: str = "--queue", timeout: int = 10):
    """A psycopg2 connection, or DLFError with one line saying what to check."""
    url = check_url(url, option)
    try:
        import psycopg2
    except ImportError:
        raise DLFError(f"{option}: the queue needs psycopg2; pip install 'dlf-ablate[cluster]'") from None
    try:
        return psycopg2.connect(url, connect_timeout=timeout, application_name="dlf-ablate")
    except psycopg2.Error as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DLFError(f"{option} {redact(url)}: cannot connect ({first}); check the URL and that "
                       "PostgreSQL runs and accepts connections from this host") from None


@contextlib.contextmanager
def advisory_lock(url: str, name: str, option: str = "--storage") -> Iterator[None]:
    """A mutex across hosts: a PostgreSQL session advisory lock on its own connection.

    For check-then-act sequences on a shared database (count the trials, then ask for one). The
    server releases it when the block ends or when the holder's connection dies, so a killed
    process never leaves it locked.
    """
    conn = connect(url, option)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(hashtext(%s))", (name,))
        yield
    finally:
        conn.close()  # ends the session: the lock goes with it


class Queue:
    """The queue table on one database, through one connection (one transaction at a time)."""

    def __init__(self, url: str, option: str = "--queue") -> None:
        self.url, self.option = url, option
        self.conn = connect(url, option)
        self._lock = threading.Lock()
        self._used = time.monotonic()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()

    def __enter__(self) -> "Queue":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """A cursor inside one transaction; reconnects first if the connection was lost."""
        import psycopg2

        with self._lock:
            self._revive()
            try:
                with self.conn, self.conn.cursor() as cur:  # commits, or rolls back on error
                    yield cur
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as err:
                self.close()
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise DLFError(f"{self.option} {redact(self.url)}: lost the connection ({first})") from None

    def _revive(self) -> None:
        """Reconnect when the connection is closed or, after a long idle spell (a training run),
        no longer answers: the server or a proxy may have dropped it meanwhile."""
        import psycopg2

        idle, self._used = time.monotonic() - self._used, time.monotonic()
        if not self.conn.closed and idle > IDLE_PING_S:
            try:
                with self.conn, self.conn.cursor() as cur:
                    cur.execute("SELECT 1")
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                self.close()
        if self.conn.closed:
            self.conn = connect(self.url, self.option)

    def ensure_schema(self) -> None:
        """Create the table, or bring one made by an older dlf-ablate to per-study rows."""
        with self.transaction() as cur:
            ensure_schema(cur, f"{self.option} {redact(self.url)}")

    def enqueue(self, rows: list[tuple[str, str, str, dict]], tracking_uri: str | None,
                max_attempts: int = 3) -> dict[str, int]:
        """Insert ``(key, study, name, spec_dict)`` rows; counts of added, requeued and kept rows.
        A row is one (study, key): the same key in another study is another row."""
        from psycopg2.extras import Json, execute_values

        if max_attempts < 1:
            raise DLFError(f"--max-attempts {max_attempts}: must be at least 1")
        values = [(k, s, n, Json(spec), tracking_uri, max_attempts) for k, s, n, spec in rows]
        sql = (f"INSERT INTO {TABLE} AS q (key, study, name, spec, tracking_uri, max_attempts) VALUES %s "
               "ON CONFLICT (study, key) DO UPDATE SET state = 'pending', attempts = 0, worker = NULL, error = NULL, "
               "spec = EXCLUDED.spec, tracking_uri = EXCLUDED.tracking_uri, max_attempts = EXCLUDED.max_attempts "
               "WHERE q.state = 'failed' RETURNING (xmax = 0)")
        with self.transaction() as cur:
            changed = execute_values(cur, sql, values, fetch=True) if values else []
        added = sum(1 for (inserted,) in changed if inserted)
        return {"added": added, "requeued": len(changed) - added, "kept": len(rows) - len(changed)}

    def claim(self, worker: str, stale_s: float, study: str | None = None,
              decode: Callable[[dict], Any] = dict) -> Claim | None:
        """Claim the next run, or None when nothing is claimable now.

        The spec is decoded inside the claiming transaction: a row that does not decode, or whose
        spec names another study than the row (the run would be tracked under that study), is
        failed in the same transaction (and the next row tried), so no row is left half-claimed.
        """
        args = {"worker": worker, "stale": float(stale_s), "study": study}
        while True:
            with self.transaction() as cur:
                cur.execute(REAP, args)
                cur.execute(CLAIM, args)
                row = cur.fetchone()
                if row is None:
                    return None
                key, study_name, name, spec, uri, attempts, max_attempts = row
                try:
                    if isinstance(spec, dict) and spec.get("study", study_name) != study_name:
                        raise ValueError(f"it names study {spec['study']!r}, the queue row {study_name!r}")
                    return Claim(key, study_name, name, decode(spec), uri, attempts, max_attempts)
                except Exception as err:  # noqa: BLE001 - any decode failure is this row's failure
                    cur.execute(f"UPDATE {TABLE} SET state = 'failed', finished_at = now(), error = %s "
                                "WHERE study = %s AND key = %s",
                                (f"cannot decode the run spec: {err}", study_name, key))

    # The row updates below take the claim (its study and key) and touch the row only while
    # ``worker`` still owns it.
    def heartbeat(self, claim: Claim, worker: str) -> bool:
        """Refresh this worker's claim; False when it no longer owns the row."""
        with self.transaction() as cur:
            cur.execute(f"UPDATE {TABLE} SET heartbeat_at = now() WHERE {MINE}", _mine(claim, worker))
            return cur.rowcount == 1

    def finish(self, claim: Claim, worker: str, run_id: str | None, seconds: float | None) -> bool:
        with self.transaction() as cur:
            cur.execute(f"UPDATE {TABLE} SET state = 'done', finished_at = now(), run_id = %(run_id)s, "
                        f"seconds = %(seconds)s, error = NULL WHERE {MINE}",
                        _mine(claim, worker, run_id=run_id, seconds=seconds))
            return cur.rowcount == 1

    def fail(self, claim: Claim, worker: str, error: str) -> str | None:
        """Record a failed attempt: back to pending while attempts remain, else failed. The new state."""
        with self.transaction() as cur:
            cur.execute(f"UPDATE {TABLE} SET error = %(error)s, worker = NULL, "
                        "state = CASE WHEN attempts < max_attempts THEN 'pending' ELSE 'failed' END, "
                        "finished_at = CASE WHEN attempts < max_attempts THEN NULL ELSE now() END "
                        f"WHERE {MINE} RETURNING state", _mine(claim, worker, error=error))
            row = cur.fetchone()
            return row[0] if row else None

    def release(self, claim: Claim, worker: str, reason: str) -> bool:
        """Give a claimed run back untried (stopped worker, unreachable tracking server)."""
        with self.transaction() as cur:
            cur.execute(f"UPDATE {TABLE} SET state = 'pending', worker = NULL, error = %(reason)s, "
                        f"attempts = greatest(attempts - 1, 0) WHERE {MINE}",
                        _mine(claim, worker, reason=reason))
            return cur.rowcount == 1

    def counts(self, study: str | None = None) -> dict[str, int]:
        with self.transaction() as cur:
            cur.execute(f"SELECT state, count(*) FROM {TABLE} WHERE (%(study)s::text IS NULL OR study = %(study)s) "
                        "GROUP BY state", {"study": study})
            found = dict(cur.fetchall())
        return {state: found.get(state, 0) for state in STATES}

    def rows(self, study: str | None = None) -> list[QueueRow]:
        with self.transaction() as cur:
            cur.execute("SELECT key, study, name, state, worker, workers, attempts, max_attempts, "
                        "extract(epoch FROM now() - heartbeat_at), run_id, seconds, error "
                        f"FROM {TABLE} WHERE (%(study)s::text IS NULL OR study = %(study)s) ORDER BY seq",
                        {"study": study})
            found = cur.fetchall()
        return [QueueRow(*r[:5], tuple(r[5]), r[6], r[7], None if r[8] is None else float(r[8]), *r[9:])
                for r in found]

    def group_states(self, study: str, variant: str, dataset: str) -> list[str]:
        """States of the rows of one (variant, dataset): its parent run closes when all are final."""
        with self.transaction() as cur:
            cur.execute(f"SELECT state FROM {TABLE} WHERE study = %s AND spec->>'variant' = %s "
                        "AND spec->>'dataset' = %s", (study, variant, dataset))
            return [state for (state,) in cur.fetchall()]
