"""Queue identity: a run is queued per (study, run key), as a local ``run`` finishes keys per study.

Two studies sharing a configuration (``full`` with the same seeds) are trained once each, never
answered "already queued"; a queue table made before per-study rows is migrated, one made by
something else is refused with one line.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import yaml

from dlf.errors import DLFError
from dlf.cluster.queue import Queue

try:
    from tests.servers import PostgresServer, pg_missing_reason
except ImportError:  # tests/ is not a package and the repo root is not on sys.path
    from servers import PostgresServer, pg_missing_reason

pytestmark = pytest.mark.cluster
if pg_missing_reason():
    pytest.skip(pg_missing_reason(), allow_module_level=True)

# The table as dlf-ablate created it before rows were per study (run key the sole primary key).
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS dlf_queue (
    key           TEXT PRIMARY KEY,
    seq           BIGSERIAL,
    study         TEXT NOT NULL,
    name          TEXT NOT NULL,
    spec          JSONB NOT NULL,
    tracking_uri  TEXT,
    state         TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending','running','done','failed')),
    worker        TEXT,
    workers       TEXT[] NOT NULL DEFAULT '{}',
    attempts      INTEGER NOT NULL DEFAULT 0,
    max_attempts  INTEGER NOT NULL DEFAULT 3,
    stale_s       REAL,
    enqueued_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    claimed_at    TIMESTAMPTZ,
    heartbeat_at  TIMESTAMPTZ,
    finished_at   TIMESTAMPTZ,
    run_id        TEXT,
    seconds       REAL,
    error         TEXT
);
CREATE INDEX IF NOT EXISTS dlf_queue_state_seq ON dlf_queue (state, seq);
"""


@pytest.fixture(scope="module")
def pg():
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def url(pg):
    return pg.create_db(f"id_{uuid.uuid4().hex[:10]}")


@pytest.fixture
def queue(url):
    q = Queue(url)
    q.ensure_schema()
    yield q
    q.close()


def rows(n, study):
    return [(f"k{i}", study, f"v@d#{i}", {"n": i}) for i in range(n)]


def states(queue) -> dict:
    return {(r.study, r.key): r.state for r in queue.rows()}


def execute(url: str, sql: str) -> None:
    with Queue(url) as q, q.transaction() as cur:
        cur.execute(sql)


def test_the_same_key_in_two_studies_is_two_rows(queue):
    assert queue.enqueue(rows(2, "a"), None) == {"added": 2, "requeued": 0, "kept": 0}
    assert queue.enqueue(rows(2, "b"), None) == {"added": 2, "requeued": 0, "kept": 0}
    assert queue.enqueue(rows(2, "b"), None) == {"added": 0, "requeued": 0, "kept": 2}
    claims = {(c.study, c.key): c for c in (queue.claim("w:1", 30) for _ in range(4))}
    assert sorted(claims) == [("a", "k0"), ("a", "k1"), ("b", "k0"), ("b", "k1")]
    # Each update touches its own study's row only.
    assert queue.finish(claims["a", "k0"], "w:1", "run-a", 1.0)
    assert queue.fail(claims["b", "k0"], "w:1", "boom") == "pending"
    assert queue.release(claims["b", "k1"], "w:1", "stopped")
    assert states(queue) == {("a", "k0"): "done", ("a", "k1"): "running",
                             ("b", "k0"): "pending", ("b", "k1"): "pending"}
    assert queue.counts("a") == {"pending": 0, "running": 1, "done": 1, "failed": 0}
    assert queue.claim("w:2", 30, study="a") is None and queue.claim("w:2", 30, study="b").study == "b"


def test_queue_status_names_the_study_of_each_run(url, queue):
    from typer.testing import CliRunner

    from dlf.cli import app

    queue.enqueue(rows(1, "a") + rows(1, "b"), None)
    out = CliRunner().invoke(app, ["queue", "status", "--queue", url, "--all"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    runs = [line for line in out.output.splitlines() if "v@d#0" in line]
    assert len(runs) == 2 and [line.strip("│ ").split()[0] for line in runs] == ["a", "b"]


def test_a_spec_naming_another_study_is_failed_in_the_claim(queue):
    # The worker tracks a run under the row's study; a spec saying otherwise is not run at all.
    queue.enqueue([("k0", "a", "v@d#0", {"study": "b"}), ("k1", "a", "v@d#1", {"study": "a"})], None)
    claim = queue.claim("w:1", 30)
    assert (claim.study, claim.key) == ("a", "k1")
    failed = {r.key: r for r in queue.rows()}["k0"]
    assert failed.state == "failed" and "names study 'b', the queue row 'a'" in failed.error


def test_a_queue_made_before_per_study_rows_is_migrated(url):
    execute(url, OLD_SCHEMA + "INSERT INTO dlf_queue (key, study, name, spec, state, run_id) VALUES "
                 "('k0', 'a', 'v@d#0', '{}', 'done', 'r0'), ('k1', 'a', 'v@d#1', '{}', 'pending', NULL)")
    errors = []
    ready = threading.Barrier(3)

    def start():  # hosts starting at once: one migrates, the others find it done
        try:
            with Queue(url) as q:
                ready.wait()
                q.ensure_schema()
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Queue(url) as q:
        q.ensure_schema()  # idempotent
        assert states(q) == {("a", "k0"): "done", ("a", "k1"): "pending"}  # rows kept as they were
        assert q.enqueue(rows(2, "b"), None)["added"] == 2  # was "kept": the bug
        assert q.enqueue(rows(2, "a"), None)["kept"] == 2
        with q.transaction() as cur:
            cur.execute("SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_index i JOIN pg_attribute a "
                        "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                        "WHERE i.indrelid = 'dlf_queue'::regclass AND i.indisprimary")
            assert cur.fetchone()[0] == ["key", "study"]


@pytest.mark.parametrize("ddl, found", [
    ("CREATE TABLE dlf_queue (id SERIAL PRIMARY KEY, key TEXT, study TEXT)", "primary key (id)"),
    ("CREATE TABLE dlf_queue (key TEXT, study TEXT)", "no primary key"),
])
def test_a_queue_table_dlf_did_not_make_is_refused(url, ddl, found):
    execute(url, ddl + "; INSERT INTO dlf_queue (key, study) VALUES ('k0', 'a')")
    with Queue(url) as q:
        with pytest.raises(DLFError) as err:
            q.ensure_schema()
        msg = str(err.value)
        assert "\n" not in msg and msg.startswith("--queue postgresql://")
        assert f"table dlf_queue has {found}" in msg and "ALTER TABLE dlf_queue RENAME TO dlf_queue_old" in msg
        with q.transaction() as cur:  # left exactly as it was
            cur.execute("SELECT count(*), count(*) FILTER (WHERE key = 'k0') FROM dlf_queue")
            assert cur.fetchone() == (1, 1)


# ------------------------------------------------------------------ real workers, two studies
def write_study(path: Path, name: str) -> Path:
    body = {"name": name, "datasets": ["synthetic-mosi"], "variants": ["full"], "seeds": [1, 2],
            "set": {"data.scale": 0.02, "train.max_epochs": 1, "train.batch_size": 16, "train.accumulation": 1}}
    path.write_text(yaml.safe_dump(body))
    return path


def start_worker(url: str, home: Path) -> subprocess.Popen:
    # One torch thread each: the workers share the 2 cores of the test machine.
    cmd = [sys.executable, "-c", "from dlf.cli import main; main()",
           "worker", "--queue", url, "--threads", "1", "--poll", "0.2"]
    return subprocess.Popen(cmd, env={**os.environ, "DLF_HOME": str(home)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_studies_sharing_runs_are_both_trained_by_workers(url, tmp_path, monkeypatch):
    from dlf.cluster.launch import enqueue_study, queue_rows
    from dlf.report.collect import collect
    from dlf.study.spec import expand, load_study

    monkeypatch.setenv("DLF_CODE_VERSION", "identity-test")  # workers check it against the enqueued one
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # one store, one lock folder for both workers
    paths = [write_study(tmp_path / f"{name}.yaml", name) for name in ("shared-a", "shared-b")]
    keys = [sorted(s.key for s in expand(load_study(str(p)))) for p in paths]
    assert keys[0] == keys[1]  # the premise: the same two run keys in both studies
    assert [enqueue_study(str(p), url, tracking_uri=uri).added for p in paths] == [2, 2]

    workers = [start_worker(url, tmp_path / f"host{i}") for i in range(2)]
    try:
        for proc in workers:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-3000:]
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    final = queue_rows(url)
    assert sorted((r.study, r.key, r.state) for r in final) == sorted(
        (study, key, "done") for study in ("shared-a", "shared-b") for key in keys[0])
    slots = [("full", "synthetic-mosi", 1), ("full", "synthetic-mosi", 2)]
    expected = {name: slots for name in ("shared-a", "shared-b")}
    got = collect(uri, ["shared-a", "shared-b"], expected=expected)
    assert got.problems.empty, got.problems.to_dict("records")
    finished = got.finished
    assert sorted(zip(finished["study"], finished["run_key"])) == sorted(
        (r.study, r.key) for r in final)  # every run tracked under its own study...
    assert set(finished["run_id"]) == {r.run_id for r in final} and finished["run_id"].nunique() == 4  # ...once
    assert [enqueue_study(str(p), url, tracking_uri=uri).cached for p in paths] == [2, 2]
