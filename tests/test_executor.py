"""Executing runs: claims, caching, abandoned runs, failures, worker settings, and real processes
that are killed, interrupted or run concurrently."""
from __future__ import annotations

import dataclasses
import signal
import threading
import time
from collections import Counter

import pytest

from dlf.run import tracking
from dlf.errors import DLFError
from dlf.run.executor import execute_run, key_lock, run_lock
from dlf.run.local import _worker_settings, parse_devices, run_study, thread_budget, StudyRun
from dlf.study.spec import expand, load_study
from study_fixtures import CODE_VERSION, TINY_SET, cli_env, parent_runs, seed_runs, start_cli, write_study


@pytest.fixture
def specs(tmp_path, tiny_mosi, monkeypatch):
    monkeypatch.setenv("DLF_CODE_VERSION", CODE_VERSION)
    return expand(load_study(write_study(tmp_path, tiny_mosi, name="exec", seeds=(1,))))


@pytest.fixture
def uri(tmp_path, new_store):
    return new_store(tmp_path / "mlflow.db")


def runtime():
    from dlf.train.loop import Runtime

    return Runtime(device="cpu", threads=1, progress=False)


def test_thread_budget_never_oversubscribes_silently():
    assert thread_budget(1, 2) == (2, None)
    assert thread_budget(2, 2) == (1, None)
    assert thread_budget(3, 16) == (5, None)
    threads, warning = thread_budget(4, 2)
    assert threads == 1 and "30-80x" in warning and "--workers 2" in warning
    assert thread_budget(2, 2, threads=2)[1] is not None


def test_devices_give_one_gpu_per_worker(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # GPU indices are checked against the machine
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert parse_devices("0,1") == ["0", "1"] and parse_devices("cpu") == ["cpu"] and parse_devices(None) is None
    for bad in ("0,0", "gpu0", "1,x"):
        with pytest.raises(DLFError, match="--devices"):
            parse_devices(bad)
    runtimes, envs = _worker_settings(3, ["0", "1"], None, StudyRun([]), lambda ev: None)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1", "0"]
    assert {r["device"] for r in runtimes} == {"cuda"}
    runtimes, envs = _worker_settings(2, None, None, StudyRun([]), lambda ev: None)
    assert all("CUDA_VISIBLE_DEVICES" not in e for e in envs) and all(r["threads"] >= 1 for r in runtimes)


@pytest.mark.slow
def test_finished_key_is_cached_not_retrained(specs, uri):
    first = execute_run(specs[0], uri, runtime())
    assert first.status == "finished" and first.train_seconds > 0
    again = execute_run(specs[0], uri, runtime())
    assert again.status == "cached" and again.run_id == first.run_id
    assert [r[1] for r in seed_runs(uri.removeprefix("sqlite:///"))] == ["FINISHED"]


@pytest.mark.slow
def test_run_left_running_by_a_dead_process_is_failed_and_redone(specs, uri):
    spec = specs[0]
    c = tracking.client(uri)
    exp = tracking.ensure_experiment(c, spec.study, uri)
    parent, _ = tracking.ensure_parents(c, exp, [spec])[(spec.variant, spec.dataset)]
    stale = tracking.create_seed_run(c, exp, parent, spec, tracking.environment("cpu"))  # never closed
    outcome = execute_run(spec, uri, runtime())
    assert outcome.status == "finished" and outcome.run_id != stale
    old = c.get_run(stale)
    assert old.info.status == "FAILED" and old.data.tags["dlf.error"].startswith("abandoned")


@pytest.mark.slow
def test_a_key_locked_by_another_process_is_not_trained(specs, uri, monkeypatch):
    lock = run_lock(specs[0], uri)
    lock.acquire()
    refused = threading.Event()
    monkeypatch.setattr("dlf.run.executor.key_lock", lambda key, u: _observed(key_lock(key, u), refused))
    try:
        assert execute_run(specs[0], uri, runtime(), wait=False).status == "busy"
        waiter = threading.Thread(target=lambda: box.append(execute_run(specs[0], uri, runtime())))
        box: list = []
        waiter.start()
        assert refused.wait(timeout=60), "the waiting run never asked for the key's lock"
        assert waiter.is_alive() and not seed_runs(uri.removeprefix("sqlite:///"))  # waits, trains nothing
        # The same configuration in another study is another run (its own experiment): not held up.
        other = dataclasses.replace(specs[0], study="exec-other")
        assert execute_run(other, uri, runtime(), wait=False).status == "finished"
        assert waiter.is_alive()
    finally:
        lock.release()
    waiter.join(timeout=60)
    assert box[0].status == "finished"


def _observed(lock, refused: threading.Event):
    """``lock`` whose blocking acquire first tries once without waiting and sets ``refused`` if it
    was held: the moment a waiting run has been turned away (instead of sleeping and hoping)."""
    from filelock import Timeout

    real = lock.acquire

    def acquire(timeout: float = -1, **kw):
        if timeout == -1:
            try:
                return real(timeout=0)
            except Timeout:
                refused.set()
        return real(timeout=timeout, **kw)

    lock.acquire = acquire
    return lock


@pytest.mark.slow
def test_an_interrupt_just_after_the_run_is_created_closes_it_as_killed(specs, uri, monkeypatch):
    """Ctrl-C between the row's commit and the caller holding its id must not leave it RUNNING."""
    real = tracking.create_seed_run

    def create_then_interrupt(*args, **kwargs):
        run_id = real(*args, **kwargs)
        signal.raise_signal(signal.SIGINT)
        return run_id

    monkeypatch.setattr(tracking, "create_seed_run", create_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        execute_run(specs[0], uri, runtime())
    assert [s for _, s, _ in seed_runs(uri.removeprefix("sqlite:///"))] == ["KILLED"]


@pytest.mark.slow
def test_a_failing_run_is_an_outcome_and_the_others_still_run(specs, uri):
    bad = dataclasses.replace(specs[0], data_fingerprint="0" * 64, key="f" * 64)
    result = run_study([bad, specs[1]], uri, workers=1, threads=1)
    assert not result.ok and result.counts() == {"finished": 1, "cached": 0, "failed": 1, "not run": 0}
    failed = result.outcomes[bad.key]
    assert "changed after the study was planned" in failed.error and "\n" not in failed.error
    run = tracking.client(uri).get_run(failed.run_id)
    assert run.info.status == "FAILED" and "changed after" in run.data.tags["dlf.error"]


class _ThreadWorker:
    """Stands in for a spawned worker process of dlf.run.workers: a thread answering on the pipe."""

    exitcode = None

    def __init__(self, conn, answer) -> None:
        self.thread = threading.Thread(target=self._serve, args=(conn, answer), daemon=True)
        self.thread.start()

    @staticmethod
    def _serve(conn, answer) -> None:
        while (item := conn.recv()) is not None:
            for message in answer(item):
                conn.send(message)

    def is_alive(self) -> bool:
        return self.thread.is_alive()

    def join(self, timeout=None) -> None:
        self.thread.join(timeout)


def test_local_workers_hand_out_specs_forward_epochs_and_retry_a_busy_key_last(specs):
    """The main process's side of dlf.run.workers, with a thread for the worker process (the
    spawned workers themselves train in the slow tests below)."""
    from multiprocessing import Pipe

    from dlf.run.executor import RunOutcome
    from dlf.run.workers import EpochForward, LocalWorkers

    asked = []

    def answer(item):
        key = item["spec"]["key"]
        asked.append((key, item["wait"]))
        if key == specs[0].key and not item["wait"]:  # locked by another process
            return [{"type": "done", "worker": 0, "key": key, "outcome": RunOutcome("busy", key).to_dict()}]
        epochs = []
        EpochForward(epochs.append, 0, key)(1, {"val_mae": 0.5, "val_acc2": 0.6, "train_loss": 1.0})
        return [*epochs, {"type": "done", "worker": 0, "key": key, "outcome": RunOutcome("finished", key).to_dict()}]

    mine, theirs = Pipe(duplex=True)
    workers = LocalWorkers.__new__(LocalWorkers)  # one stand-in worker instead of spawned processes
    workers.procs, workers.conns = [_ThreadWorker(theirs, answer)], [mine]
    events, records = [], []
    workers.run(specs, lambda spec, outcome, w: records.append((spec.key, outcome.status, w)), events.append)
    assert asked == [(specs[0].key, False), (specs[1].key, False), (specs[0].key, True)]  # busy: last, then wait
    assert records == [(specs[1].key, "finished", 0), (specs[0].key, "finished", 0)]
    assert [e["type"] for e in events] == ["start", "busy", "start", "epoch", "start", "epoch"]
    assert all(e["metrics"] == {"val_mae": 0.5, "train_loss": 1.0} for e in events if e["type"] == "epoch")
    assert not workers.procs[0].is_alive()  # told to stop when the work was done


@pytest.mark.slow
def test_worker_pool_trains_each_key_once(tmp_path, tiny_mosi, monkeypatch, uri):
    monkeypatch.setenv("DLF_CODE_VERSION", CODE_VERSION)
    specs = expand(load_study(write_study(tmp_path, tiny_mosi, name="pool")))
    events: list[dict] = []
    result = run_study(specs, uri, workers=2, threads=1, emit=events.append)
    assert result.ok and result.counts()["finished"] == 4
    runs = seed_runs(tmp_path / "mlflow.db")
    assert sorted(k for _, _, k in runs) == sorted(s.key for s in specs)
    assert {w for e in events if e["type"] == "start" for w in [e["worker"]]} == {0, 1}
    assert any(e["type"] == "epoch" and "val_mae" in e["metrics"] for e in events)
    again = run_study(specs, uri, workers=2, threads=1)
    assert again.counts()["cached"] == 4 and len(seed_runs(tmp_path / "mlflow.db")) == 4


@pytest.mark.slow
def test_two_concurrent_invocations_train_each_key_once(tmp_path, tiny_mosi):
    study = write_study(tmp_path, tiny_mosi, name="race", variants=("full", "wo_lr", "wo_ls"))
    env = cli_env(tmp_path / "home")
    procs = [start_cli(["run", str(study), "--threads", "1"], env) for _ in range(2)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    runs = seed_runs(tmp_path / "home" / "mlflow.db")
    assert len(runs) == 6 and {s for _, s, _ in runs} == {"FINISHED"}  # no duplicate, no abandoned run
    assert set(Counter(k for _, _, k in runs).values()) == {1}
    assert len(parent_runs(tmp_path / "home" / "mlflow.db")) == 3  # one parent per variant, not per process
    finished = [int(o.split(" finished,")[0].split()[-1]) for o in outs]
    assert sum(finished) == 6  # the two invocations split the work; each run once


@pytest.mark.slow
def test_interrupted_and_killed_study_resumes_exactly_once(tmp_path, tiny_mosi):
    """SIGINT (clean stop) of a worker pool and of an in-process run, SIGKILL mid-run, then a resume."""
    study = write_study(tmp_path, tiny_mosi, name="crash", extra={"set": {
        **TINY_SET, "train.max_epochs": 8, "train.patience": 8}})
    env = cli_env(tmp_path / "home")
    db = tmp_path / "home" / "mlflow.db"
    expected = {s.key for s in _expand_with(env, study)}

    killed: set[str] = set()
    for workers in ("2", "1"):  # Ctrl-C stops a worker pool and an in-process run alike
        proc = start_cli(["run", str(study), "--workers", workers, "--threads", "1"], env)
        _wait_for(db, proc, running=1)
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=120)[0]
        assert proc.returncode == 130 and "interrupted" in out, out
        states = seed_runs(db)
        now_killed = {rid for rid, status, _ in states if status == "KILLED"}
        assert now_killed - killed and "RUNNING" not in {s for _, s, _ in states}, (workers, states)
        killed = now_killed

    proc = start_cli(["run", str(study), "--threads", "1"], env)
    _wait_for(db, proc, running=1, finished=1)
    proc.kill()
    proc.communicate(timeout=30)  # reaped, and its pipe closed
    before = {rid: (s, k) for rid, s, k in seed_runs(db)}
    abandoned = {rid for rid, (s, _) in before.items() if s == "RUNNING"}
    done_before = {rid for rid, (s, _) in before.items() if s == "FINISHED"}
    assert abandoned, "SIGKILL landed between two runs"

    proc = start_cli(["run", str(study), "--workers", "2", "--threads", "1"], env)
    out = proc.communicate(timeout=240)[0]
    assert proc.returncode == 0, out
    after = {rid: (s, k) for rid, s, k in seed_runs(db)}
    finished = [k for s, k in after.values() if s == "FINISHED"]
    assert sorted(finished) == sorted(expected)  # every key exactly once
    assert all(after[rid][0] == "FINISHED" for rid in done_before)  # nothing finished was redone
    assert all(after[rid][0] == "FAILED" for rid in abandoned) and all(after[r][0] == "KILLED" for r in killed)
    assert f"{len(done_before)} cached" in out


def _expand_with(env: dict, study):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DLF_CODE_VERSION", env["DLF_CODE_VERSION"])
        return expand(load_study(study))


def _wait_for(db, proc, running: int = 0, finished: int = 0, timeout: float = 180.0) -> None:
    """Poll the store until enough seed runs are RUNNING / FINISHED (the moment to send a signal)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = Counter(s for _, s, _ in seed_runs(db))
        if states["RUNNING"] >= running and states["FINISHED"] >= finished:
            return
        if proc.poll() is not None:
            pytest.fail(f"run exited early: {proc.communicate()[0]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("timed out waiting for runs to start")
