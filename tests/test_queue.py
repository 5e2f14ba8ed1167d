"""The PostgreSQL work queue against a real server: claims, heartbeats, reclaims, retries, and the
worker loop with a stand-in run function (the real executor is exercised in test_cluster.py)."""
from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
import uuid
from types import SimpleNamespace

import pytest

from dlf.errors import DLFError
from dlf.cluster.queue import Queue, advisory_lock, check_url, redact, sqlalchemy_url
from dlf.run.tracking import tracking_problem
from dlf.cluster.worker import Runs, Worker, WorkerOptions, heartbeat_interval

try:
    from tests.servers import PostgresServer, free_port, pg_missing_reason
except ImportError:  # tests/ is not a package and the repo root is not on sys.path
    from servers import PostgresServer, free_port, pg_missing_reason

pytestmark = pytest.mark.cluster
if pg_missing_reason():
    pytest.skip(pg_missing_reason(), allow_module_level=True)


@pytest.fixture(scope="module")
def pg():
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def url(pg):
    return pg.create_db(f"q_{uuid.uuid4().hex[:10]}")


@pytest.fixture
def queue(url):
    q = Queue(url)
    q.ensure_schema()
    yield q
    q.close()


def rows(n, study="s"):
    return [(f"k{i}", study, f"v@d#{i}", {"n": i}) for i in range(n)]


def row(queue, key, study="s"):
    return {(r.study, r.key): r for r in queue.rows()}[(study, key)]


def test_enqueue_once_keeps_done_and_requeues_failed(queue):
    assert queue.enqueue(rows(3), "http://t", max_attempts=1) == {"added": 3, "requeued": 0, "kept": 0}
    done = queue.claim("w:1", 30)
    assert queue.finish(done, "w:1", "run1", 1.5)
    failed = queue.claim("w:1", 30)
    assert queue.fail(failed, "w:1", "boom") == "failed"  # max_attempts=1: no retry
    assert queue.counts() == {"pending": 1, "running": 0, "done": 1, "failed": 1}
    assert queue.enqueue(rows(4), "http://t") == {"added": 1, "requeued": 1, "kept": 2}
    r = row(queue, failed.key)
    assert (r.state, r.attempts, r.error, r.worker) == ("pending", 0, None, None)
    assert row(queue, done.key).state == "done"
    assert queue.counts()["pending"] == 3


def test_claim_order_fields_and_drain(queue):
    queue.enqueue(rows(2), "http://tracking:5000")
    first = queue.claim("w:1", 30, decode=lambda d: d["n"] * 10)
    assert (first.key, first.name, first.spec, first.tracking_uri, first.attempts) == ("k0", "v@d#0", 0, "http://tracking:5000", 1)
    assert queue.claim("w:2", 30).key == "k1"
    assert queue.claim("w:3", 30) is None  # both running with fresh heartbeats
    r = row(queue, "k0")
    assert (r.state, r.worker, r.workers) == ("running", "w:1", ("w:1",))
    assert 0 <= r.heartbeat_age < 5


def test_concurrent_claims_never_share_a_key(url, queue):
    queue.enqueue(rows(40), None)
    claimed: dict[str, list[str]] = {}
    ready = threading.Barrier(4)

    def grab(name):
        q = Queue(url)
        mine = claimed.setdefault(name, [])
        ready.wait()  # all connected: the claims really race
        while (c := q.claim(name, 30)) is not None:
            mine.append(c.key)
        q.close()

    threads = [threading.Thread(target=grab, args=(f"w:{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    keys = [k for ks in claimed.values() for k in ks]
    assert sorted(keys) == sorted(f"k{i}" for i in range(40))  # every key once, none twice
    assert sum(1 for ks in claimed.values() if ks) >= 2  # the claims really interleaved


def test_silent_owner_is_reclaimed_and_cannot_overwrite(queue):
    queue.enqueue(rows(1), None)
    a = queue.claim("host-a:1", stale_s=0.5)
    assert queue.claim("host-b:2", stale_s=30) is None  # still fresh
    time.sleep(0.6)
    b = queue.claim("host-b:2", stale_s=30)
    assert (b.key, b.attempts) == (a.key, 2)
    r = row(queue, a.key)
    assert r.workers == ("host-a:1", "host-b:2") and r.error == "reclaimed from host-a:1 (no heartbeat)"
    # The silent worker lost the row: its heartbeat, result and failure are all refused.
    assert not queue.heartbeat(a, "host-a:1")
    assert not queue.finish(a, "host-a:1", "stale-run", 1.0)
    assert queue.fail(a, "host-a:1", "late") is None
    assert not queue.release(a, "host-a:1", "late")
    assert queue.finish(b, "host-b:2", "good-run", 2.0)
    r = row(queue, a.key)
    assert (r.state, r.run_id, r.error) == ("done", "good-run", None)


def test_heartbeats_keep_the_claim(queue):
    queue.enqueue(rows(1), None)
    a = queue.claim("w:a", stale_s=0.6)
    for _ in range(4):
        time.sleep(0.25)
        assert queue.heartbeat(a, "w:a")
        assert queue.claim("w:b", 30) is None  # 1 s in all, never silent for 0.6 s


def test_attempts_exhausted(queue):
    queue.enqueue(rows(1), None, max_attempts=2)
    c = queue.claim("w:a", 30)
    assert queue.fail(c, "w:a", "first") == "pending"
    c = queue.claim("w:b", 0.2)
    assert c.attempts == 2
    time.sleep(0.3)  # w:b dies silently on its last attempt: reaped to failed, not claimed again
    assert queue.claim("w:c", 30) is None
    r = row(queue, c.key)
    assert r.state == "failed" and "w:b stopped heartbeating" in r.error and r.attempts == 2


def test_release_returns_attempt_and_bad_spec_fails_in_claim(queue):
    queue.enqueue(rows(2), None)
    c = queue.claim("w:a", 30)
    assert queue.release(c, "w:a", "tracking server down")
    r = row(queue, c.key)
    assert (r.state, r.attempts, r.worker, r.error) == ("pending", 0, None, "tracking server down")

    def picky(spec):
        if spec["n"] == 0:
            raise ValueError("bad spec")
        return spec

    c = queue.claim("w:a", 30, decode=picky)  # k0 fails to decode: failed in the same transaction
    assert c.key == "k1"
    r = row(queue, "k0")
    assert r.state == "failed" and "bad spec" in r.error
    assert queue.counts() == {"pending": 0, "running": 1, "done": 0, "failed": 1}


def test_unreachable_database_and_bad_url_are_one_line():
    with pytest.raises(DLFError) as err:
        Queue(f"postgresql://dlf:secret@127.0.0.1:{free_port()}/nope")
    msg = str(err.value)
    assert "cannot connect" in msg and "\n" not in msg and "secret" not in msg and "***" in msg
    with pytest.raises(DLFError, match="not a PostgreSQL URL"):
        check_url("mysql://x/y")
    assert redact("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"


def test_advisory_lock_serialises_across_connections(url):
    order = []

    def second():
        with advisory_lock(url, "tune:s"):
            order.append("second in")

    with advisory_lock(url, "tune:s"):
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.5)
        order.append("first out")  # the other session waited all this time
    t.join(timeout=10)
    assert order == ["first out", "second in"]
    with advisory_lock(url, "tune:other"), advisory_lock(url, "tune:s"):
        pass  # different names do not block each other; a released name is free again


def test_sqlalchemy_url_names_the_installed_driver():
    import importlib.util

    psycopg3 = importlib.util.find_spec("psycopg") is not None
    assert sqlalchemy_url("postgresql://u@h/db") == ("postgresql://u@h/db" if psycopg3 else "postgresql+psycopg2://u@h/db")
    assert sqlalchemy_url("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert sqlalchemy_url("sqlite:///x.db") == "sqlite:///x.db"


def test_tracking_probe(pg):
    assert tracking_problem(f"http://127.0.0.1:{free_port()}").startswith("tracking server")
    assert tracking_problem("sqlite:///x.db") is None
    assert heartbeat_interval(3) == 0.75 and heartbeat_interval(600) == 15.0
    assert heartbeat_interval(0.1) == 0.2  # the floor: WorkerOptions.heartbeat goes below it


# ------------------------------------------------------------------ the worker loop, stand-in runs
def outcome(status="finished", error=None):
    return SimpleNamespace(status=status, run_id="r", seconds=0.01, error=error)


class StandIn:
    """Runs whose spec is the row's dict and whose training is ``execute``."""

    def __init__(self, execute, prepare=lambda spec: spec):
        self.execute, self.prepare = execute, prepare

    decode = staticmethod(dict)

    def close_parent(self, queue, spec, uri):
        pass


def make_worker(url, execute, prepare=lambda spec: spec, **opts):
    # Short intervals, so that reclaims and lost claims show within a fraction of a second.
    opts = {"poll": 0.05, "stale": 2.0, "heartbeat": 0.05, **opts}
    options = WorkerOptions(queue_url=url, tracking_uri="sqlite:///unused.db", **opts)
    return Worker(options, runs=StandIn(execute, prepare), runtime=object())


def test_worker_drains_and_retries(url, queue):
    queue.enqueue(rows(4), None, max_attempts=2)
    calls = []

    def execute(spec, uri, runtime):
        calls.append(spec["n"])
        return outcome("failed", "diverged") if spec["n"] == 3 else outcome()

    report = make_worker(url, execute).run()
    assert sorted(calls) == [0, 1, 2, 3, 3]  # the failing run tried twice, the others once
    assert report.done == ["v@d#0", "v@d#1", "v@d#2"] and [n for n, _ in report.failed] == ["v@d#3"] * 2
    assert queue.counts() == {"pending": 0, "running": 0, "done": 3, "failed": 1}
    assert row(queue, "k3").error == "diverged"


def test_worker_heartbeats_while_running(url, queue):
    queue.enqueue(rows(1), None)
    seen = {}

    def slow(spec, uri, runtime):
        time.sleep(1.0)  # longer than the 0.5 s stale interval: only the heartbeats keep the claim
        other = Queue(url)
        seen["claim"] = other.claim("thief:1", 30)
        other.close()
        return outcome()

    make_worker(url, slow, stale=0.5, heartbeat=0.05).run()
    assert seen["claim"] is None and row(queue, "k0").state == "done"


def test_worker_sigterm_releases_the_run(url, queue):
    queue.enqueue(rows(2), None)
    finished = []

    def killed(spec, uri, runtime):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # interrupted by the handler before this ends
        finished.append(spec)
        return outcome()

    report = make_worker(url, killed).run()
    assert report.stopped_by == "SIGTERM" and finished == [] and report.done == report.failed == []
    r = row(queue, "k0")
    assert (r.state, r.attempts, r.worker) == ("pending", 0, None) and "stopped by SIGTERM" in r.error
    assert queue.counts()["pending"] == 2
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored


def test_worker_sigterm_swallowed_by_the_run_still_releases(url, queue):
    queue.enqueue(rows(1), None)

    def swallowing(spec, uri, runtime):
        try:  # like a library import cut short by the signal, then caught by a broad except
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except BaseException:  # noqa: BLE001
            pass
        return outcome("failed", "AttributeError: module 'sympy' has no attribute 'core'")

    report = make_worker(url, swallowing).run()
    assert report.stopped_by == "SIGTERM" and report.failed == []
    r = row(queue, "k0")
    assert (r.state, r.attempts) == ("pending", 0) and "stopped by SIGTERM" in r.error


def test_worker_unreachable_tracking_server_releases(url, queue):
    queue.enqueue(rows(1), None)
    w = make_worker(url, lambda *a: pytest.fail("must not run"))
    w.opts.tracking_uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(DLFError, match="unreachable.*released v@d#0 back to the queue"):
        w.run()
    r = row(queue, "k0")
    assert (r.state, r.attempts, r.worker) == ("pending", 0, None)


def test_worker_that_cannot_prepare_a_run_releases_it(url, queue):
    queue.enqueue(rows(2), None)

    def wrong_code(spec):
        raise DLFError("this host runs code abc, the run was enqueued with def; install the same commit")

    with pytest.raises(DLFError, match="install the same commit; released v@d#0 back to the queue"):
        make_worker(url, lambda *a: pytest.fail("must not run"), prepare=wrong_code).run()
    assert all(r.state == "pending" and r.attempts == 0 for r in queue.rows())


def test_worker_lost_claim_interrupts_the_run(url, queue):
    queue.enqueue(rows(1), None)
    finished = []

    def stolen(spec, uri, runtime):
        other = Queue(url)  # another worker takes the row over and finishes it meanwhile
        try:
            with other.transaction() as cur:
                cur.execute("UPDATE dlf_queue SET worker = 'thief:1', state = 'done', run_id = 'theirs'")
            time.sleep(30)  # the next heartbeat (0.05 s) sees the loss and interrupts this
            finished.append(spec)
        finally:
            other.close()
        return outcome()

    report = make_worker(url, stolen).run()
    assert report.lost == ["v@d#0"] and finished == [] and report.done == []
    r = row(queue, "k0")
    assert (r.worker, r.state, r.run_id) == ("thief:1", "done", "theirs")


def test_prepare_checks_code_version_and_finds_this_hosts_data(tmp_path):
    import yaml

    from dlf.study.spec import expand, load_study

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "prep", "datasets": ["synthetic-mosi"], "variants": ["full"],
                                    "seeds": [1], "set": {"data.scale": 0.02}}))
    spec = expand(load_study(str(path)))[0]
    runs = Runs()
    assert runs.decode(spec.to_dict()) == spec and runs.prepare(spec) is spec
    # Enqueued on a host that keeps the data elsewhere: resolved again here, same fingerprint.
    moved = dataclasses.replace(spec, data_path=str(tmp_path / "elsewhere" / "mosi.pkl"))
    assert runs.prepare(moved).data_path == spec.data_path
    with pytest.raises(DLFError, match="data fingerprint .* differs"):
        runs.prepare(dataclasses.replace(moved, data_fingerprint="0" * 64))
    with pytest.raises(DLFError, match="enqueued with deadbeef; install the same commit"):
        runs.prepare(dataclasses.replace(spec, code_version="deadbeef"))


def test_worker_gpus_without_cuda_are_refused_before_the_queue(monkeypatch):
    import torch

    from dlf.cluster.launch import start_workers

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    for devices in ("0", "0,1"):
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # one GPU is pinned before it is checked
        with pytest.raises(DLFError, match=f"--devices {devices}: CUDA is not available"):
            start_workers(WorkerOptions(queue_url="postgresql://unused/none"), devices, on_event=print)


def test_gpu_indices_count_within_inherited_visible_devices(monkeypatch):
    from dlf.cluster.launch import physical_gpu

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert physical_gpu("1") == "1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")  # as Slurm hands out a node's GPUs
    assert physical_gpu("1") == "7"
    with pytest.raises(DLFError, match="only 2 GPUs are visible"):
        physical_gpu("2")


def test_one_child_worker_per_device(url, queue, capfd, monkeypatch):
    from dlf.cluster.launch import start_workers

    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # the parent checks the GPUs exist (CPU CI)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,4")
    opts = WorkerOptions(queue_url=url, poll=0.05, stale=2)
    assert start_workers(opts, "0,1", on_event=print) == 0  # an empty queue: both children drain and exit
    lines = [l for l in capfd.readouterr().err.splitlines() if "queue drained" in l]
    assert len(lines) == 2 and len({l.split(":")[1] for l in lines}) == 2  # two processes
