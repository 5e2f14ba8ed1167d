"""``dlf-ablate worker``: claim runs from the PostgreSQL queue, execute them, record the result.

A worker holds at most one run. While it trains, a thread refreshes the claim's heartbeat on its
own connection; if the row turns out to belong to someone else (this worker was silent past its
stale interval and was reclaimed), the run is interrupted rather than trained twice to the end.

SIGTERM / SIGINT: a run in progress is interrupted and its row released (back to pending, the
attempt not counted), then the worker exits. Between runs the signal just ends the loop: nothing
is interrupted inside a database transaction. The tracking server is checked after each claim; if
it does not answer, the row is released and the worker stops with one error line.
"""
from __future__ import annotations

import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from dlf.run.tracking import tracking_problem
from dlf.errors import DLFError
from dlf.cluster.queue import Claim, Queue
from dlf.startup import settle_gc


class WorkerStop(KeyboardInterrupt):
    """SIGTERM/SIGINT arrived while a run was in progress (a KeyboardInterrupt, so that code that
    cleans up after Ctrl-C, such as ending an MLflow run as KILLED, does so here too)."""


class ClaimLost(KeyboardInterrupt):
    """Another worker reclaimed the run this one is training."""


@dataclass
class WorkerOptions:
    queue_url: str
    tracking_uri: str | None = None  # overrides the URI stored with each queued run
    study: str | None = None  # only claim runs of this study
    follow: bool = False  # keep polling when the queue is drained
    poll: float = 5.0  # seconds between claims while nothing is claimable
    stale: float = 60.0  # others may reclaim this worker's run after this long without a heartbeat
    heartbeat: float | None = None  # seconds between heartbeats; None: heartbeat_interval(stale)
    device: str = "auto"
    threads: int | None = None
    data_root: str | None = None


@dataclass
class WorkerReport:
    worker: str
    done: list[str] = field(default_factory=list)  # run names finished (or found already finished)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (name, error)
    lost: list[str] = field(default_factory=list)  # reclaimed by another worker while running
    gave_up: list[str] = field(default_factory=list)  # failed with no attempt left
    stopped_by: str | None = None  # signal name when stopped by SIGTERM/SIGINT


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def heartbeat_interval(stale: float) -> float:
    """A quarter of the stale interval, so three beats can be missed before a reclaim."""
    return min(max(stale / 4.0, 0.2), 15.0)


class _Signals:
    """Turns SIGTERM/SIGINT into a stop request, raised as WorkerStop only while a run is executing."""

    def __init__(self) -> None:
        self.stop: str | None = None
        self.in_run = False
        self.lost = False
        self.wake = threading.Event()
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_Signals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.lost and signum == signal.SIGINT:  # from the heartbeat thread: the claim is gone
            self.lost = False
            if self.in_run:
                raise ClaimLost()
            return
        self.stop = signal.Signals(signum).name
        self.wake.set()
        if self.in_run:
            raise WorkerStop(self.stop)

    def claim_lost(self) -> None:
        self.lost = True
        # A real signal to the main thread (not interrupt_main) so that a blocking call wakes up.
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)


class _Heartbeat:
    """Refreshes one claim from a thread, on its own connection, until the run ends."""

    def __init__(self, queue: Queue, claim: Claim, worker: str, interval: float, on_lost: Callable[[], None]):
        self.queue, self.claim, self.worker, self.interval, self.on_lost = queue, claim, worker, interval, on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dlf-heartbeat", daemon=True)

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                owned = self.queue.heartbeat(self.claim, self.worker)
            except Exception:  # noqa: BLE001 - database briefly unreachable: try again next beat
                continue
            if not owned:
                self.on_lost()
                return


class Runs:
    """What the worker does with a claimed row: the real RunSpec / executor / MLflow parents.
    Tests substitute a stand-in with the same four methods."""

    def __init__(self, data_root: str | None = None) -> None:
        self.data_root = data_root

    def decode(self, d: dict) -> Any:
        from dlf.study.spec import RunSpec

        return RunSpec.from_dict(d)

    def prepare(self, spec: Any) -> Any:
        """Check that this host can run ``spec`` as enqueued; DLFError (a host problem) if not.

        Same code version (it is part of the run key, so a host with other code would file its
        results under a key they do not belong to), and this host's copy of the data file: the
        enqueuing host resolved ``data_path``; another host may keep the data elsewhere (its own
        ``--data-root``, its own synthetic cache), so a missing path is resolved again here.
        """
        import dataclasses

        from dlf.study.spec import code_version

        mine = code_version()
        if mine != spec.code_version:
            raise DLFError(f"this host runs code {mine}, the run was enqueued with {spec.code_version}; "
                           "install the same commit on every worker host")
        if Path(spec.data_path).is_file() and self.data_root is None:
            return spec
        from dlf.data.mmsa import file_fingerprint, resolve_dataset

        ref = resolve_dataset(spec.dataset, spec.config.data, data_root=self.data_root)
        fingerprint = file_fingerprint(ref.path)
        if fingerprint != spec.data_fingerprint:
            raise DLFError(f"{ref.path}: data fingerprint {fingerprint[:12]} differs from the enqueued "
                           f"{spec.data_fingerprint[:12]} ({spec.dataset}); give this host the same data file")
        return dataclasses.replace(spec, data_path=str(ref.path))

    def execute(self, spec: Any, tracking_uri: str, runtime: Any) -> Any:
        from dlf.run.executor import execute_run

        return execute_run(spec, tracking_uri, runtime)

    def close_parent(self, queue: Queue, spec: Any, uri: str) -> None:
        """Close the (variant, dataset) parent run once every seed row of it is final.

        Checked after this worker's own update committed, so of two workers finishing the last
        two seeds at once at least the later one sees both final. Cosmetic: errors are ignored.
        """
        from dlf.run import tracking

        try:
            states = queue.group_states(spec.study, spec.variant, spec.dataset)
            if not states or any(s in ("pending", "running") for s in states):
                return
            c = tracking.client(uri)
            exp = tracking.ensure_experiment(c, spec.study, uri)
            parent, _ = tracking.ensure_parents(c, exp, [spec])[(spec.variant, spec.dataset)]
            tracking.close_parent(c, parent, ["finished" if s == "done" else "failed" for s in states])
        except Exception:  # noqa: BLE001 - the seed runs carry the results
            pass


def _retry(fn: Callable[[], Any], tries: int = 3, delay: float = 2.0) -> Any:
    """Retry a row update whose connection dropped (each update only touches a row we own)."""
    for attempt in range(tries):
        try:
            return fn()
        except DLFError:
            if attempt == tries - 1:
                raise
            time.sleep(delay)


class Worker:
    """One claim-prepare-execute-record loop over the queue."""

    def __init__(self, opts: WorkerOptions, runs: Any = None, runtime: Any = None,
                 on_event: Callable[[str], None] = lambda line: None) -> None:
        self.opts = opts
        self.runs = runs or Runs(opts.data_root)
        self.runtime = runtime
        self.say = on_event
        self.id = worker_id()
        self.report = WorkerReport(self.id)

    def run(self) -> WorkerReport:
        queue = Queue(self.opts.queue_url)  # first: an unreachable database fails before torch loads
        beats = Queue(self.opts.queue_url)  # the heartbeat thread's own connection
        with queue, beats, _Signals() as sig:
            queue.ensure_schema()
            if self.runtime is None:
                from dlf.train.loop import Runtime

                self.runtime = Runtime(device=self.opts.device, threads=self.opts.threads, progress=False)
            settle_gc()  # the trainer is imported; polls may last hours before a first run (dlf.startup)
            while sig.stop is None:
                claim = queue.claim(self.id, self.opts.stale, self.opts.study, self.runs.decode)
                if claim is not None and sig.stop is not None:  # stopped during the claim itself
                    _retry(lambda: queue.release(claim, self.id, f"worker {self.id} stopped by {sig.stop}"))
                elif claim is not None:
                    self._process(queue, beats, sig, claim)
                elif self.opts.follow or not self._drained(queue):
                    sig.wake.wait(self.opts.poll)
                else:
                    break
            self.report.stopped_by = sig.stop
        return self.report

    def _drained(self, queue: Queue) -> bool:
        """Nothing pending and nothing running anywhere: a run in flight elsewhere may still come
        back (failed and retried, or reclaimed when its worker dies), so idle workers wait for it."""
        counts = queue.counts(self.opts.study)
        return counts["pending"] == 0 and counts["running"] == 0

    def _process(self, queue: Queue, beats: Queue, sig: _Signals, claim: Claim) -> None:
        uri = self.opts.tracking_uri or claim.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
        problem = tracking_problem(uri) if uri else "no tracking URI: pass --tracking-uri"
        if problem:
            self._give_back(queue, claim, problem)
        try:
            spec = self.runs.prepare(claim.spec)
        except DLFError as err:
            self._give_back(queue, claim, str(err))
        self.say(f"{self.id}: {claim.name} (attempt {claim.attempts}/{claim.max_attempts})")
        interval = self.opts.heartbeat or heartbeat_interval(self.opts.stale)
        on_lost = sig.claim_lost if sig._old else (lambda: None)
        try:
            with _Heartbeat(beats, claim, self.id, interval, on_lost):
                sig.in_run = True
                outcome = self.runs.execute(spec, uri, self.runtime)
                sig.in_run = False
            if sig.stop is not None and outcome.status == "failed":
                # Some library swallowed the interrupt (an import cut short, a broad except):
                # the failure is the stop's doing, not the run's.
                raise WorkerStop(sig.stop)
        except WorkerStop:
            _retry(lambda: queue.release(claim, self.id, f"worker {self.id} stopped by {sig.stop}"))
            self.say(f"{self.id}: stopped by {sig.stop}; released {claim.name}")
            return
        except ClaimLost:
            self.report.lost.append(claim.name)
            self.say(f"{self.id}: {claim.name} was reclaimed by another worker; dropped it")
            return
        finally:
            sig.in_run = sig.lost = False
        self._record(queue, claim, spec, outcome, uri)

    def _record(self, queue: Queue, claim: Claim, spec: Any, outcome: Any, uri: str) -> None:
        if outcome.status in ("finished", "cached"):
            if not _retry(lambda: queue.finish(claim, self.id, outcome.run_id, outcome.seconds)):
                self.report.lost.append(claim.name)  # reclaimed meanwhile: the new owner records it
                self.say(f"{self.id}: {claim.name} {outcome.status}, but another worker had reclaimed it")
                return
            self.report.done.append(claim.name)
            self.say(f"{self.id}: {claim.name} {outcome.status} ({outcome.seconds or 0:.1f}s)")
            self.runs.close_parent(queue, spec, uri)
            return
        problem = tracking_problem(uri)
        if problem:  # the run failed because the server went away: not the run's fault
            self._give_back(queue, claim, problem)
        if self._failed(queue, claim, outcome.error or "failed") == "failed":
            self.runs.close_parent(queue, spec, uri)

    def _give_back(self, queue: Queue, claim: Claim, problem: str) -> None:
        """A problem of this host, not of the run: release the row untried and stop this worker."""
        _retry(lambda: queue.release(claim, self.id, problem))
        raise DLFError(f"{problem}; released {claim.name} back to the queue")

    def _failed(self, queue: Queue, claim: Claim, error: str) -> str | None:
        state = _retry(lambda: queue.fail(claim, self.id, error))
        self.report.failed.append((claim.name, error))
        if state == "failed":
            self.report.gave_up.append(claim.name)
        retry = "will be retried" if state == "pending" else "no attempt left"
        self.say(f"{self.id}: {claim.name} failed ({retry}): {error}")
        return state
