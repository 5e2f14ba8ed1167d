"""The queue table's DDL, its migration from older layouts, and the statements that claim rows
(the queue itself is :mod:`dlf.queue`).

A row is one (study, run key). Tables made before that (one row per run key for every study,
``key`` the sole primary key) are migrated in place by :func:`ensure_schema`.
"""
from __future__ import annotations

from typing import Any

from dlf.errors import DLFError

TABLE = "dlf_queue"
STATES = ("pending", "running", "done", "failed")

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    key           TEXT NOT NULL,
    seq           BIGSERIAL,
    study         TEXT NOT NULL,
    name          TEXT NOT NULL,
    spec          JSONB NOT NULL,
    tracking_uri  TEXT,
    state         TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending','running','done','failed')),
    worker        TEXT,
    workers       TEXT[] NOT NULL DEFAULT '{{}}',
    attempts      INTEGER NOT NULL DEFAULT 0,
    max_attempts  INTEGER NOT NULL DEFAULT 3,
    stale_s       REAL,
    enqueued_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    claimed_at    TIMESTAMPTZ,
    heartbeat_at  TIMESTAMPTZ,
    finished_at   TIMESTAMPTZ,
    run_id        TEXT,
    seconds       REAL,
    error         TEXT,
    PRIMARY KEY (study, key)
);
CREATE INDEX IF NOT EXISTS {TABLE}_state_seq ON {TABLE} (state, seq);
"""

# Rows whose owner went silent but have no attempt left are failed, not claimed again.
REAP = f"""
UPDATE {TABLE} SET state = 'failed', finished_at = now(),
    error = 'worker ' || worker || ' stopped heartbeating; no attempt left (' || attempts || '/' || max_attempts || ')'
WHERE state = 'running' AND heartbeat_at < now() - make_interval(secs => stale_s)
  AND attempts >= max_attempts AND (%(study)s::text IS NULL OR study = %(study)s)
"""

CLAIM = f"""
UPDATE {TABLE} AS q SET state = 'running', worker = %(worker)s, workers = array_append(q.workers, %(worker)s),
    attempts = q.attempts + 1, stale_s = %(stale)s, claimed_at = now(), heartbeat_at = now(),
    error = CASE WHEN q.state = 'running' THEN 'reclaimed from ' || q.worker || ' (no heartbeat)' ELSE q.error END
WHERE (q.study, q.key) = (
    SELECT study, key FROM {TABLE}
    WHERE (state = 'pending'
           OR (state = 'running' AND heartbeat_at < now() - make_interval(secs => stale_s)
               AND attempts < max_attempts))
      AND (%(study)s::text IS NULL OR study = %(study)s)
    ORDER BY seq FOR UPDATE SKIP LOCKED LIMIT 1)
RETURNING q.key, q.study, q.name, q.spec, q.tracking_uri, q.attempts, q.max_attempts
"""

# The row of one claim, while ``worker`` still owns it.
MINE = "study = %(study)s AND key = %(key)s AND worker = %(worker)s AND state = 'running'"


def ensure_schema(cur: Any, where: str) -> None:
    """Create the table, or migrate one made by an older dlf-ablate, in ``cur``'s transaction.

    ``where`` names the database in messages (the option and the redacted URL). A table with
    another primary key was not made by dlf-ablate: refused with what to do, never altered.
    """
    # Concurrent CREATE ... IF NOT EXISTS can still collide in the catalog, and two hosts must not
    # both migrate: serialise it (the lock ends with the transaction).
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (TABLE,))
    exists, columns, constraint = _primary_key(cur)
    if exists and columns == ["key"]:
        _migrate(cur, constraint)
    elif exists and columns != ["study", "key"]:
        found = f"primary key ({', '.join(columns)})" if columns else "no primary key"
        raise DLFError(f"{where}: table {TABLE} has {found}, not (study, key), so dlf-ablate did not make it; "
                       f"rename it (ALTER TABLE {TABLE} RENAME TO {TABLE}_old) and enqueue again")
    cur.execute(SCHEMA)


def _primary_key(cur: Any) -> tuple[bool, list[str], str | None]:
    """(table exists, primary key columns in order, constraint name)."""
    cur.execute("SELECT to_regclass(%(t)s) IS NOT NULL", {"t": TABLE})
    (exists,) = cur.fetchone()
    cur.execute("SELECT c.conname, array_agg(a.attname::text ORDER BY k.n) FROM pg_constraint c "
                "CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, n) "
                "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum "
                "WHERE c.conrelid = to_regclass(%(t)s) AND c.contype = 'p' GROUP BY c.conname", {"t": TABLE})
    found = cur.fetchone()
    return bool(exists), list(found[1]) if found else [], found[0] if found else None


def _migrate(cur: Any, constraint: str | None) -> None:
    """Old tables had one row per run key for all studies: key them by (study, key) instead. The
    rows stay as they are (their keys were unique, so their (study, key) pairs are); in the
    caller's transaction, so a failure leaves the old table untouched."""
    from psycopg2 import sql

    cur.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}, ADD PRIMARY KEY (study, key)").format(
        sql.Identifier(TABLE), sql.Identifier(constraint)))
