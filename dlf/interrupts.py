"""Where Ctrl-C / SIGTERM may land: between tracking-store calls, never inside one.

A KeyboardInterrupt raised inside a SQLite statement was seen to leave the database locked for
this very process (the statement is left unfinished while the traceback keeps its cursor alive):
closing the interrupted run as KILLED then failed with 'database is locked' and the run was left
RUNNING (about one Ctrl-C in twenty, in a stress test of `run`). The
tracking client is therefore wrapped in :class:`HeldCalls` (each call completes, then the
interrupt is delivered), and a few multi-step transitions (creating a run and holding its id;
finishing it) are held as a whole. Holding only works in the main thread, where Python delivers
signals; elsewhere the blocks run unchanged.
"""
from __future__ import annotations

import contextlib
import functools
import signal
import threading
from typing import Any, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM during the block and deliver them (to the usual handlers) after it."""
    if not _in_main_thread():
        yield
        return
    caught: list[int] = []
    old = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        for s in dict.fromkeys(caught):
            signal.raise_signal(s)


@contextlib.contextmanager
def ignored() -> Iterator[None]:
    """Ignore a further Ctrl-C / SIGTERM during the block (while an interrupted run is closed)."""
    if not _in_main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


class HeldCalls:
    """Proxy whose method calls each run under :func:`held` (attributes pass through)."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            with held():
                return attr(*args, **kwargs)

        return call


@contextlib.contextmanager
def signals_to_main_thread() -> Iterator[None]:
    """Threads started in this block never take SIGINT/SIGTERM (they inherit the block), so the
    kernel always hands those to the main thread, where Python handles them anyway. This matters
    while the main thread briefly ignores SIGINT (dlf.run.workers): a signal that another
    thread took then would be lost, one the main thread has blocked waits for it."""
    if not _in_main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, set(SIGNALS))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
