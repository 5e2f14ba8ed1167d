"""``dlf-ablate run STUDY --ray ADDRESS``: every pending run of a study as a Ray task.

The driver (this process) creates the experiment and parent runs, as the local pool does, then
submits one task per pending key with its resources (``threads`` CPUs, ``gpus_per_run`` GPUs).
A task claims its key in the cluster's lease table (:mod:`dlf.cluster.claims`) and runs
:func:`dlf.run.executor.execute_run`, the function the local pool runs, so that a run is tracked
the same way wherever it trains. Ray retries a task whose worker process or node died; the retry
takes its own lease over and the executor marks the dead attempt's MLflow run FAILED before
training the key again. A key another driver holds comes back as 'busy' and is submitted again
later (it is then cached, or trained if that driver died). A killed driver takes its tasks with
it; its leases lapse and a new driver trains exactly the missing keys.
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from dlf.errors import DLFError
from dlf.run.executor import BUSY, FAILED, RunOutcome

RETRIES = 3  # task retries after its worker or node died
BUSY_POLL = 2.0  # seconds before a key held by another driver is tried again
STOP_GRACE_SECONDS = 60.0


@dataclass(frozen=True)
class TaskShape:
    cpus: int  # torch threads of one run, the CPUs Ray reserves for it
    gpus: float  # GPUs (a fraction packs several runs on one GPU)

    @property
    def runtime(self) -> dict[str, Any]:
        return {"device": "cuda" if self.gpus else "cpu", "threads": self.cpus, "progress": False}

    def options(self) -> dict[str, Any]:
        return {"num_cpus": self.cpus, "num_gpus": self.gpus, "max_retries": RETRIES, "retry_exceptions": False}

    def describe(self) -> str:
        return f"{self.cpus} CPU(s)" + (f" and {self.gpus:g} GPU" if self.gpus else "") + " per run"


def task_shape(cluster_cpus: float, workers: int | None, threads: int | None, gpus: float) -> TaskShape:
    """Threads per run: ``--threads``, else the cluster's CPUs split between ``--workers`` runs, else 1."""
    if threads is None:
        threads = max(1, int(cluster_cpus) // workers) if workers else 1
    return TaskShape(cpus=threads, gpus=gpus)


def lease_name(spec: Any) -> str:
    return f"run:{hashlib.sha256(spec.study.encode()).hexdigest()[:16]}-{spec.key}"


class EventBox:
    """A driver's mailbox (a Ray actor): tasks post start and epoch events, the driver drains them."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def put(self, event: dict) -> None:
        self.events.append(event)

    def drain(self) -> list[dict]:
        out, self.events = self.events, []
        return out


def run_on_ray(specs: list, tracking_uri: str | None, address: str, gpus_per_run: float | None = None,
               threads: int | None = None, workers: int | None = None,
               emit: Callable[[dict], None] | None = None):
    """Run every spec whose key has not FINISHED as Ray tasks; a :class:`dlf.run.local.StudyRun`."""
    return RayStudy.connect(specs, tracking_uri, address, gpus_per_run, threads, workers).run(emit)


class RayStudy:
    """A study's pending runs on a connected cluster: :meth:`connect` checks (one line each, nothing
    written), :meth:`run` runs them and disconnects."""

    def __init__(self, specs: list, uri: str, info: Any, shape: TaskShape, workers: int | None) -> None:
        self.specs, self.uri, self.info, self.shape, self.workers = specs, uri, info, shape, workers

    @classmethod
    def connect(cls, specs: list, tracking_uri: str | None, address: str, gpus_per_run: float | None = None,
                threads: int | None = None, workers: int | None = None) -> RayStudy:
        from dlf.cluster import ray_session
        from dlf.run import tracking

        gpus = ray_session.check_gpus_per_run(gpus_per_run)
        uri = tracking.resolve_tracking_uri(tracking_uri)
        problem = tracking.tracking_problem(uri)
        if problem:
            raise DLFError(f"{problem}; start it or fix --tracking-uri")
        info = ray_session.connect(address, ray_session.forwarded_env())
        try:
            ray_session.check_cluster(info, gpus, {"--tracking-uri": uri})
        except DLFError:
            ray_session.disconnect()
            raise
        return cls(specs, uri, info, task_shape(info.cpus, workers, threads, gpus), workers)

    def run(self, emit: Callable[[dict], None] | None = None):
        from dlf.cluster import ray_session
        from dlf.cluster.claims import claim_table, claim_ttl, cluster_lock
        from dlf.run.local import StudyRun, close_parents, open_study_runs

        emit = emit or (lambda event: None)
        result = StudyRun(list(self.specs))
        try:
            if not self.specs:
                return result
            emit({"type": "note", "message": f"{self.info.describe()}; {self.shape.describe()}"})
            table, ttl = claim_table(), claim_ttl()
            lock = cluster_lock(table, f"study:{self.specs[0].study}", ttl)
            opened = open_study_runs(self.specs, self.uri, result, emit, lock=lock)
            if opened is None:
                return result
            c, parents, pending = opened
            try:
                if pending:
                    _Driver(self.uri, self.shape, table, ttl, self.workers or len(pending), result, emit).run(pending)
            except KeyboardInterrupt:
                result.interrupted = True
            finally:
                close_parents(c, parents, self.specs, result.outcomes)
            return result
        finally:
            ray_session.disconnect()


class _Driver:
    """Submits tasks (at most ``limit`` at once), turns their events and results into ``emit`` calls."""

    def __init__(self, uri: str, shape: TaskShape, table: Any, ttl: float, limit: int, result, emit) -> None:
        import ray

        self.ray, self.uri, self.shape, self.table, self.ttl = ray, uri, shape, table, ttl
        self.limit, self.result, self.emit = limit, result, emit
        self.task = ray.remote(execute_on_node).options(name="dlf-run", **shape.options())
        self.box = _event_box(ray)
        self.running: dict[Any, Any] = {}  # object ref -> spec
        self.slots: dict[str, int] = {}  # key -> progress line, while its task runs

    def run(self, pending: list) -> None:
        todo = [(0.0, spec) for spec in pending]  # (not before, spec)
        try:
            while todo or self.running:
                todo = self._submit(todo)
                done, _ = self.ray.wait(list(self.running), num_returns=1, timeout=0.2) if self.running else ([], [])
                self._events()
                for ref in done:
                    todo += self._finished(ref)
                if not self.running and todo:
                    time.sleep(min(BUSY_POLL, max(0.0, min(t for t, _ in todo) - time.monotonic())))
        except KeyboardInterrupt:
            self._interrupt()
            raise

    def _submit(self, todo: list) -> list:
        now, later = time.monotonic(), []
        for not_before, spec in todo:
            if len(self.running) >= self.limit or not_before > now:
                later.append((not_before, spec))
                continue
            ref = self.task.remote(spec.to_dict(), self.uri, self.shape.runtime, self.table, self.box, self.ttl)
            self.running[ref] = spec
        return later

    def _events(self) -> None:
        by_key = {spec.key: spec for spec in self.running.values()}
        try:
            events = self.ray.get(self.box.drain.remote())
        except self.ray.exceptions.RayActorError:  # progress only: a new box for the tasks to come
            self.box, events = _event_box(self.ray), []
        for ev in events:
            spec = by_key.get(ev.get("key"))
            if spec is None:
                continue
            if ev["type"] == "start":
                busy = set(self.slots.values())
                self.slots[spec.key] = next(i for i in range(len(busy) + 1) if i not in busy)
            if spec.key in self.slots:
                self.emit({**ev, "worker": self.slots[spec.key], "spec": spec})

    def _finished(self, ref: Any) -> list:
        spec = self.running.pop(ref)
        slot = self.slots.pop(spec.key, 0)
        try:
            outcome = RunOutcome.from_dict(self.ray.get(ref))
        except self.ray.exceptions.TaskCancelledError:
            return []
        except self.ray.exceptions.RayError as err:  # its worker or node died RETRIES + 1 times
            outcome = RunOutcome(FAILED, spec.key, error=_first_line(err))
        if outcome.status == BUSY:
            self.emit({"type": "busy", "worker": slot, "spec": spec})
            return [(time.monotonic() + BUSY_POLL, spec)]
        self.result.outcomes[spec.key] = outcome
        self.emit({"type": "done", "worker": slot, "spec": spec, "outcome": outcome})
        return []

    def _interrupt(self) -> None:
        """Cancel the running tasks (each closes its run as KILLED) and record what still finishes."""
        for ref in self.running:
            self.ray.cancel(ref)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while self.running and time.monotonic() < deadline:
            done, _ = self.ray.wait(list(self.running), num_returns=1, timeout=0.5)
            for ref in done:
                self._finished(ref)


def _event_box(ray: Any) -> Any:
    """The driver's mailbox on the head node, which outlives the other nodes."""
    return ray.remote(EventBox).options(num_cpus=0, resources={"node:__internal_head__": 0.001}).remote()


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


# ---------------------------------------------------------------------------- on a cluster node
def execute_on_node(spec_dict: dict, uri: str, runtime_kwargs: dict, table: Any, box: Any, ttl: float) -> dict:
    """The Ray task: claim the key, then run it as a local worker would; an outcome dict."""
    import ray

    from dlf.cluster.claims import Lease
    from dlf.run.executor import execute_run
    from dlf.run.workers import EpochForward
    from dlf.startup import quiet_library_warnings, settle_gc
    from dlf.study.spec import RunSpec
    from dlf.train.loop import Runtime

    quiet_library_warnings()
    settle_gc()
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    spec = RunSpec.from_dict(spec_dict)
    try:
        spec = for_this_host(spec)
    except DLFError as err:
        return RunOutcome(FAILED, spec.key, error=f"{ray.util.get_node_ip_address()}: {err}").to_dict()
    token = ray.get_runtime_context().get_task_id()
    with Lease(table, lease_name(spec), token, ttl) as lease:
        if not lease.acquired:
            return RunOutcome(BUSY, spec.key).to_dict()
        post = _poster(box)
        post({"type": "start", "key": spec.key})
        forward = EpochForward(post, 0, spec.key)
        try:
            return execute_run(spec, uri, Runtime(**runtime_kwargs), on_epoch=forward).to_dict()
        except KeyboardInterrupt:
            if lease.lost:
                return RunOutcome(FAILED, spec.key, error="its lease lapsed and another task took the key").to_dict()
            raise


def _poster(box: Any) -> Callable[[dict], None]:
    """Posts progress to the driver's box without waiting; a lost box costs progress, never the run."""
    def post(event: dict) -> None:
        try:
            box.put.remote(event)
        except Exception:  # noqa: BLE001
            pass

    return post


def for_this_host(spec: Any) -> Any:
    """``spec`` as this node can run it: the same code version (part of the key) and this node's
    copy of the data file (its own $DLF_DATA_ROOT or synthetic cache), with the same fingerprint."""
    import dataclasses
    from pathlib import Path

    from dlf.study.spec import code_version

    mine = code_version()
    if mine != spec.code_version:
        raise DLFError(f"this node runs code {mine}, the study was planned with {spec.code_version}; "
                       "install the same commit on every node (or pin DLF_CODE_VERSION)")
    if Path(spec.data_path).is_file():
        return spec
    from dlf.data.fingerprint import file_fingerprint
    from dlf.data.mmsa import resolve_dataset

    ref = resolve_dataset(spec.dataset, spec.config.data)
    fingerprint = file_fingerprint(ref.path)
    if fingerprint != spec.data_fingerprint:
        raise DLFError(f"{ref.path}: data fingerprint {fingerprint[:12]} differs from the planned "
                       f"{spec.data_fingerprint[:12]} ({spec.dataset}); give this node the same data file")
    return dataclasses.replace(spec, data_path=str(ref.path))
