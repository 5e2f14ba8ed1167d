"""N spawned worker processes on this machine, fed one run spec at a time (used by dlf.run.local).

Each worker has its own duplex pipe to the main process: specs go down, progress events and
outcomes come up. A private pipe per worker means a worker killed mid-message can only break its
own channel, never the others' (a shared multiprocessing.Queue can be left locked by a killed
writer). The main process notices a dead worker, fails its current run (the OS already dropped
the key lock) and starts a replacement while work remains.
"""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import threading
import time
from collections import deque
from multiprocessing.connection import wait
from typing import Any, Callable, Iterator

from dlf.run import tracking
from dlf.run.executor import BUSY, FAILED, RunOutcome, execute_run, mark_abandoned
from dlf.startup import defer_gc, freeze_for_exit, quiet_library_warnings, settle_gc

STOP_GRACE_SECONDS = 60.0  # how long interrupted workers get to close their runs as KILLED


class EpochForward:
    """on_epoch hook that sends the progress-worthy part of an epoch's metrics as an event."""

    def __init__(self, put: Callable[[dict], None], worker: int, key: str) -> None:
        self.put, self.worker, self.key = put, worker, key

    def __call__(self, epoch: int, metrics: dict) -> None:
        keep = {k: metrics[k] for k in ("val_mae", "val_loss", "train_loss") if k in metrics}
        self.put({"type": "epoch", "worker": self.worker, "key": self.key, "epoch": epoch, "metrics": keep})


class LocalWorkers:
    """Hands out specs to N spawned workers and turns their messages into events and outcomes."""

    def __init__(self, n: int, uri: str, runtimes: list[dict], envs: list[dict]) -> None:
        self.ctx = mp.get_context("spawn")
        self.uri, self.runtimes, self.envs = uri, runtimes, envs
        self.procs: list[Any] = [None] * n
        self.conns: list[Any] = [None] * n
        for i in range(n):
            self._start(i)

    def _start(self, i: int) -> None:
        mine, theirs = self.ctx.Pipe(duplex=True)
        args = (i, theirs, self.uri, self.runtimes[i], self.envs[i], os.getpid())
        self.procs[i] = self.ctx.Process(target=_worker_main, args=args, name=f"dlf-worker-{i}", daemon=True)
        with _sigint_ignored_by_children():
            self.procs[i].start()
        theirs.close()
        self.conns[i] = mine

    def run(self, pending: list, record, emit) -> None:
        """Run every spec of ``pending``; ``record(spec, outcome, worker)`` gets each result."""
        todo = deque((spec, False) for spec in pending)
        running: dict[int, Any] = {}
        try:
            while todo or running:
                self._dispatch(todo, running, emit)
                for i, ev in self._receive(0.5):
                    self._handle(i, ev, running, todo, record, emit)
                self._reap_dead(running, todo, record)
        except KeyboardInterrupt:
            self._interrupt(running, todo, record, emit)
            raise
        finally:
            self._close()

    def _dispatch(self, todo: deque, running: dict, emit) -> None:
        for i in range(len(self.procs)):
            if i in running or not todo:
                continue
            if not self.procs[i].is_alive():  # died while idle
                self._start(i)
            spec, wait_for_lock = todo.popleft()
            self.conns[i].send({"spec": spec.to_dict(), "wait": wait_for_lock})
            running[i] = spec
            emit({"type": "start", "worker": i, "spec": spec})

    def _receive(self, timeout: float) -> list[tuple[int, dict]]:
        live = [c for c in self.conns if c is not None]
        out = []
        for conn in wait(live, timeout) if live else []:
            i = self.conns.index(conn)
            try:
                out.append((i, conn.recv()))
            except Exception:  # noqa: BLE001 - EOF or a torn message: the worker died
                conn.close()
                self.conns[i] = None
        return out

    def _handle(self, i: int, ev: dict, running: dict, todo: deque, record, emit) -> None:
        spec = running.get(i)
        if spec is None or ev.get("key") != spec.key:
            return
        if ev["type"] == "epoch":
            emit({**ev, "spec": spec})
            return
        running.pop(i)
        outcome = RunOutcome.from_dict(ev["outcome"])
        if outcome.status == BUSY:  # another process trains it: come back to it last, then wait
            emit({"type": "busy", "worker": i, "spec": spec})
            todo.append((spec, True))
        else:
            record(spec, outcome, i)

    def _reap_dead(self, running: dict, todo: deque, record) -> None:
        for i, spec in list(running.items()):
            if self.procs[i].is_alive() and self.conns[i] is not None:
                continue
            if self.procs[i].is_alive():  # alive but its channel broke: it cannot report any more
                self.procs[i].kill()
            self.procs[i].join(timeout=5)
            reason = f"worker process died (exit code {self.procs[i].exitcode}) during the run"
            mark_abandoned(spec, self.uri, reason)
            running.pop(i)
            record(spec, RunOutcome(FAILED, spec.key, error=reason), i)
            if todo:
                self._start(i)

    def _interrupt(self, running: dict, todo: deque, record, emit) -> None:
        """SIGTERM every worker (they close their runs as KILLED) and collect what still finishes."""
        for p in self.procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while running and time.monotonic() < deadline and any(p.is_alive() for p in self.procs):
            for i, ev in self._receive(0.2):
                if ev["type"] == "done":
                    self._handle(i, ev, running, todo, record, emit)

    def _close(self) -> None:
        for conn in self.conns:
            try:
                if conn is not None:
                    conn.send(None)
            except OSError:
                pass
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
        for conn in self.conns:
            if conn is not None:
                conn.close()


@contextlib.contextmanager
def _sigint_ignored_by_children() -> Iterator[None]:
    """Start processes that ignore SIGINT from their first instruction.

    A new interpreter keeps an ignored SIGINT ignored (and then installs no KeyboardInterrupt
    handler), so a Ctrl-C to the process group during a worker's start-up (seconds of imports)
    no longer prints a traceback from the worker. This process blocks SIGINT meanwhile, so one
    that arrives then stays pending and is delivered when the block ends, provided no other
    thread takes it while it is ignored (it would be lost): threads are started under
    :func:`dlf.interrupts.signals_to_main_thread` (the run view's display does).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    from multiprocessing import resource_tracker

    # Started first, outside the window: starting it unblocks SIGINT, which would drop one pending.
    resource_tracker.ensure_running()
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler if handler is not None else signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _worker_main(wid: int, conn, uri: str, runtime_kwargs: dict, env: dict, parent_pid: int) -> None:
    """A worker process: set its GPU/thread environment before torch loads, then run specs."""
    # Ctrl-C reaches the whole process group; only the main process reacts, and it stops the
    # workers with SIGTERM, which interrupts the current run like Ctrl-C would. SIGINT has been
    # ignored since this process started (_sigint_ignored_by_children).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update(env)
    defer_gc()  # until its first run starts (dlf.startup)
    quiet_library_warnings()  # as in the main process (a spawned interpreter starts without its filters)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()
    # Until here SIGTERM ends the process quietly (nothing to close yet); from now on it becomes a
    # KeyboardInterrupt that execute_run turns into a KILLED run, caught below wherever it lands.
    try:
        signal.signal(signal.SIGTERM, _raise_interrupt)
        _serve(wid, conn, uri, runtime_kwargs)
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a late SIGTERM while exiting: no traceback
    freeze_for_exit()


def _serve(wid: int, conn, uri: str, runtime_kwargs: dict) -> None:
    import mlflow  # noqa: F401 - every run is tracked
    from dlf.study.spec import RunSpec
    from dlf.train.loop import Runtime

    settle_gc()  # the heavy imports are done: collect normally from here on (dlf.startup)

    settle_gc()  # the trainer and the tracking client are imported: collect normally from here on
    runtime = Runtime(**runtime_kwargs)
    while (item := conn.recv()) is not None:
        spec = RunSpec.from_dict(item["spec"])
        try:
            outcome = execute_run(spec, uri, runtime, on_epoch=EpochForward(conn.send, wid, spec.key),
                                  wait=item["wait"])
        except Exception as err:  # noqa: BLE001 - execute_run should not raise; report, never hang
            outcome = RunOutcome(FAILED, spec.key, error=tracking.one_line(err))
        conn.send({"type": "done", "worker": wid, "key": spec.key, "outcome": outcome.to_dict()})


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _exit_with_parent(parent_pid: int) -> None:
    """Die with the main process: after a SIGKILL of ``run`` no orphan keeps training."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            os._exit(1)
