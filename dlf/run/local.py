"""Run a study's specs on this machine (docs/contracts.md).

The tracking store, the experiment and every parent run are created here, in the calling
process, before any worker starts (SQLite migrations must not race). Keys that already FINISHED
are skipped up front with one query; the rest run in-process (one worker) or on N spawned worker
processes that each take one spec at a time from this process. Each worker gets its own thread
budget (CPU) or its own GPU (``CUDA_VISIBLE_DEVICES``). Progress goes out as plain event dicts
to ``emit`` so that the front-end (rich, a log, a test) is the caller's choice.
"""
from __future__ import annotations

import hashlib
import os
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from dlf.run import store_file, tracking
from dlf.errors import DLFError
from dlf.run.executor import BUSY, CACHED, FAILED, FINISHED, RunOutcome, execute_run, key_lock
from dlf.run.workers import EpochForward, LocalWorkers

Emit = Callable[[dict], None]


@dataclass
class StudyRun:
    """What one invocation did: an outcome per key it reached, and whether it was interrupted."""

    specs: list
    outcomes: dict[str, RunOutcome] = field(default_factory=dict)
    interrupted: bool = False
    warnings: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {FINISHED: 0, CACHED: 0, FAILED: 0, "not run": 0}
        for spec in self.specs:
            out[self.outcomes[spec.key].status if spec.key in self.outcomes else "not run"] += 1
        return out

    @property
    def ok(self) -> bool:
        c = self.counts()
        return not self.interrupted and c[FAILED] == 0 and c["not run"] == 0


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def thread_budget(workers: int, cores: int, threads: int | None = None) -> tuple[int, str | None]:
    """Torch threads per worker (cores // workers, at least 1) and a warning if they oversubscribe."""
    t = threads or max(1, cores // workers)
    if workers * t <= cores:
        return t, None
    return t, (f"{workers} workers x {t} threads exceeds the {cores} CPU cores: every run slows down sharply "
               f"(two 2-thread runs on 2 cores measured 30-80x slower per step); use --workers {max(1, cores // t)}")


def parse_devices(text: str | None, check_cuda: bool = True) -> list[str] | None:
    """'0,1' -> ['0', '1'] (one GPU per worker); 'cpu' -> ['cpu']; None/'' -> None.

    GPU indices are refused here, with one line, when this machine has no CUDA (``check_cuda``).
    """
    if not text or not text.strip():
        return None
    items = [d.strip() for d in text.split(",") if d.strip()]
    if items == ["cpu"]:
        return items
    if not all(d.isdigit() for d in items) or len(set(items)) != len(items):
        raise DLFError(f"--devices {text!r}: expected distinct GPU indices such as 0,1 (or cpu)")
    if check_cuda:
        require_gpus(text, items)
    return items


def require_gpus(text: str, items: list[str]) -> None:
    """Refuse GPU indices up front (before any store or run is touched) where CUDA cannot serve them."""
    import torch  # here, not at import: planning and CPU runs stay free of torch

    # device_count() asks NVML first: unlike is_available(), it leaves CUDA uninitialised in this
    # process, so a later CUDA_VISIBLE_DEVICES (:func:`worker_envs`) still takes effect.
    n = torch.cuda.device_count()
    if n == 0:
        raise DLFError(f"--devices {text}: CUDA is not available on this machine; use --devices cpu or leave it out")
    # Indices are physical GPUs unless CUDA_VISIBLE_DEVICES is already set (then they are the user's to match).
    if not os.environ.get("CUDA_VISIBLE_DEVICES") and max(int(d) for d in items) >= n:
        raise DLFError(f"--devices {text}: this machine has {n} GPU(s); use indices 0..{n - 1}")


def run_study(specs: list, tracking_uri: str | None = None, workers: int | None = None,
              devices: list[str] | None = None, threads: int | None = None, emit: Emit | None = None) -> StudyRun:
    """Run every spec whose key has not FINISHED; returns what happened (never raises on a failed run).

    Ctrl-C (or SIGTERM to a worker) stops the runs in progress, which are closed as KILLED; the
    result is then marked ``interrupted`` and a later call resumes with exactly the missing keys.
    """
    emit = emit or (lambda event: None)
    result = StudyRun(list(specs))
    if not specs:
        return result
    uri = tracking.resolve_tracking_uri(tracking_uri)
    opened = open_study_runs(specs, uri, result, emit)
    if opened is None:
        return result
    c, parents, pending = opened
    workers = min(workers or (len(devices) if devices and devices != ["cpu"] else 1), max(1, len(pending)))

    def record(spec, outcome: RunOutcome, worker: int) -> None:
        result.outcomes[spec.key] = outcome
        emit({"type": "done", "worker": worker, "spec": spec, "outcome": outcome})

    try:
        if pending:
            runtimes, envs = _worker_settings(workers, devices, threads, result, emit)
            if workers == 1 and envs[0] == {}:
                _run_inline(pending, uri, runtimes[0], record, emit)
            else:
                LocalWorkers(workers, uri, runtimes, envs).run(pending, record, emit)
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        close_parents(c, parents, specs, result.outcomes)
    return result


def open_study_runs(specs: list, uri: str, result: StudyRun, emit: Emit, lock=None):
    """Create the study's experiment and parent runs, record the cached keys in ``result``; (client,
    parents, pending specs), or None when every key is cached. ``lock``: a context manager that keeps
    other drivers of the study out meanwhile (default: a file lock, for the processes of one host)."""
    if _all_cached(specs, uri, result):
        emit({"type": "plan", "total": len(specs), "cached": len(specs), "pending": 0})
        return None
    c = tracking.client(uri)
    # Two invocations of one study must not both create its experiment or parent runs.
    with lock or key_lock("study-" + hashlib.sha256(specs[0].study.encode()).hexdigest()[:16], uri):
        exp = tracking.ensure_experiment(c, specs[0].study, uri)
        parents = tracking.ensure_parents(c, exp, specs)
    done = tracking.finished_keys(c, exp)
    pending = [s for s in specs if s.key not in done]
    for spec in specs:
        if spec.key in done:
            result.outcomes[spec.key] = RunOutcome(CACHED, spec.key, run_id=done[spec.key].info.run_id)
    emit({"type": "plan", "total": len(specs), "cached": len(specs) - len(pending), "pending": len(pending)})
    return c, parents, pending


def _all_cached(specs: list, uri: str, result: StudyRun) -> bool:
    """True (outcomes filled in) when a local store shows every key FINISHED and every parent
    closed: the common "run it again" case, answered without loading MLflow."""
    fast = store_file.sqlite_finished(uri, specs[0].study)
    if fast is None:
        return False
    done, parents = fast
    if any(s.key not in done or parents.get((s.variant, s.dataset)) != "FINISHED" for s in specs):
        return False
    result.outcomes.update({s.key: RunOutcome(CACHED, s.key, run_id=done[s.key]) for s in specs})
    return True


def _worker_settings(workers: int, devices, threads, result: StudyRun, emit: Emit):
    """Runtime kwargs and environment variables for each worker."""
    gpus = devices if devices and devices != ["cpu"] else None
    t, warning = thread_budget(workers, cpu_cores(), threads)
    if warning and not gpus:
        result.warnings.append(warning)
        emit({"type": "warning", "message": warning})
    device = "cuda" if gpus else ("cpu" if devices == ["cpu"] else "auto")
    runtimes = [{"device": device, "threads": t, "progress": False} for _ in range(workers)]
    return runtimes, worker_envs(workers, gpus, t)


def worker_envs(workers: int, gpus: list[str] | None, threads: int) -> list[dict[str, str]]:
    """Per-worker environment (``run`` and ``tune``): one GPU each, round robin, and the thread budget."""
    envs = []
    for i in range(workers):
        env = {"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]} if gpus else {}
        if workers > 1 or gpus:
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        envs.append(env)
    return envs


def _run_inline(pending: list, uri: str, runtime_kwargs: dict, record, emit: Emit) -> None:
    from dlf.startup import settle_gc
    from dlf.train.loop import Runtime

    settle_gc()  # this process starts training: collect normally from here on (dlf.startup)
    runtime = Runtime(**runtime_kwargs)
    todo = deque((spec, False) for spec in pending)
    while todo:
        spec, wait = todo.popleft()
        emit({"type": "start", "worker": 0, "spec": spec})
        forward = EpochForward(lambda ev: emit({**ev, "spec": spec}), 0, spec.key)
        outcome = execute_run(spec, uri, runtime, on_epoch=forward, wait=wait)
        if outcome.status == BUSY:  # another process trains it: come back to it last, then wait
            emit({"type": "busy", "worker": 0, "spec": spec})
            todo.append((spec, True))
        else:
            record(spec, outcome, 0)


def close_parents(c, parents: dict, specs: list, outcomes: dict[str, RunOutcome]) -> None:
    groups: dict[tuple[str, str], list[str]] = {}
    for spec in specs:
        groups.setdefault((spec.variant, spec.dataset), []).append(
            outcomes[spec.key].status if spec.key in outcomes else "not run")
    for ident, statuses in groups.items():
        run_id, status = parents[ident]
        if status == "FINISHED" and all(s == CACHED for s in statuses):
            continue  # nothing changed: keep a cached re-run free of writes
        try:
            tracking.close_parent(c, run_id, statuses)
        except Exception:  # noqa: BLE001 - cosmetic; the seed runs carry the results
            pass
