"""Batches on forked helper processes: several CPU cores for one run, without the GIL.

Why processes: the threads of ``dlf.parallel.BatchPool`` share one interpreter, and the dispatch of
every op holds the GIL; a DLF micro-step issues ~4,000 ops, so two worker threads keep waiting on each
other, and more than two gain nothing. Processes scale with the cores. Measured on a 2-core machine
(MOSI, full model, alternating epochs in one process, benchmarks/batch_workers.py), two processes
trained 0.90-1.02x the time of two threads over seven runs in different phases of the machine (median
0.96), never clearly slower. So the trainer uses processes wherever ``fork`` exists
(``dlf.train._batch_pool``).

How: ``ForkPool`` forks its ``workers - 1`` helpers once, when it is built. A helper sees everything
the parent held at that moment (copy on write); the objects in ``registry`` (the model, the config,
the splits) are the ones a task may be given. The parent must not change any of them afterwards,
except the trainable parameters, which :func:`share_parameters` first moves into one anonymous shared
mapping, so every in-place update (the optimizer's step, ``load_state_dict``) reaches the helpers.
``map(task, items, *objs)`` runs ``task(*objs, item)`` for item j on worker ``j % workers`` (worker 0
is the caller) and yields the results in order. ``task`` is a module-level function (it is sent by
name); a helper's float32 tensors come back through a shared slot, not through pickling.

Safety: every worker runs one intra-op thread (OpenMP hangs in a forked child when the parent has
used several threads); helpers ignore SIGINT and SIGTERM (the parent decides), exit when the parent
closes their pipe or dies, and leave through ``os._exit``, so none of the parent's clean-up runs
twice. Linux only: elsewhere ``dlf.parallel.BatchPool`` threads are used.
"""
from __future__ import annotations

import gc
import math
import mmap
import os
import pickle
import signal
import sys
import time
from collections import deque
from multiprocessing.connection import Connection, Pipe
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import torch

from dlf.errors import DLFError

__all__ = ["ForkPool", "fork_available", "share_parameters", "MAX_PROCESS_WORKERS"]

SLOTS = 2  # result buffers per helper: it computes its next item while the parent copies the last one out
# A cap, not a measurement (this machine has 2 cores): a window of 10 micro-batches takes 5 rounds with 2
# workers, 3 with 4 and still 2 with 5-9; larger budgets serve better as concurrent runs (`run --workers`).
MAX_PROCESS_WORKERS = 4


def fork_available() -> bool:
    return sys.platform.startswith("linux") and hasattr(os, "fork")


def _shared_floats(n: int) -> torch.Tensor:
    """``n`` float32 zeros in an anonymous shared mapping: the same pages in this process and its later forks
    (not in /dev/shm, whose size containers often limit)."""
    buf = mmap.mmap(-1, 4 * max(n, 1), flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
    return torch.frombuffer(buf, dtype=torch.float32, count=max(n, 1))[:n]


def share_parameters(model: torch.nn.Module) -> int:
    """Move the trainable parameters into one shared mapping (same Parameter objects); returns their count."""
    params = [p for p in model.parameters() if p.requires_grad]
    if any(p.dtype != torch.float32 or p.device.type != "cpu" for p in params):
        raise DLFError("batch helper processes need float32 parameters on the CPU; use Runtime(batch_workers=1)")
    flat = _shared_floats(sum(p.numel() for p in params))
    offset = 0
    for p in params:
        view = flat[offset:offset + p.numel()].view_as(p)
        view.copy_(p.detach())
        p.data = view  # the optimizer and the helpers now read and write the shared pages
        offset += p.numel()
    return offset


class _Slice(NamedTuple):
    """A float32 tensor packed at ``offset`` of a slot."""
    offset: int
    shape: tuple


class _Block(NamedTuple):
    """A tuple or list of float32 tensors (None items allowed) packed back to back from ``offset``: one
    copy each way instead of one per tensor (a DLF's ~390 gradients: unpacked in ~1.3 ms instead of ~5)."""
    offset: int
    shapes: tuple  # per item: its shape, or None for a None item
    kind: type  # tuple or list


class _Array(NamedTuple):
    """A tensor sent by pickling (not float32, or too large for the slot)."""
    array: np.ndarray


def _pack(value: Any, slot: torch.Tensor, offset: int = 0) -> tuple[Any, int]:
    """``value`` with its tensors replaced by slot references (or pickled arrays); the next free offset."""
    if isinstance(value, torch.Tensor):
        n = value.numel()
        if value.dtype == torch.float32 and offset + n <= slot.numel():
            slot[offset:offset + n].copy_(value.reshape(-1))
            return _Slice(offset, tuple(value.shape)), offset + n
        return _Array(value.detach().cpu().numpy().copy()), offset
    if isinstance(value, (tuple, list)):
        block = _pack_block(value, slot, offset)
        if block is not None:
            return block
        packed = []
        for v in value:
            p, offset = _pack(v, slot, offset)
            packed.append(p)
        return _rebuild(value, packed), offset
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out[k], offset = _pack(v, slot, offset)
        return out, offset
    return value, offset


def _pack_block(value: tuple | list, slot: torch.Tensor, offset: int) -> tuple[_Block, int] | None:
    """``value`` as one ``_Block`` when it is a plain tuple or list of float32 tensors and Nones that fits."""
    if hasattr(value, "_fields") or not all(v is None or (isinstance(v, torch.Tensor) and v.dtype == torch.float32)
                                            for v in value):
        return None
    tensors = [v.reshape(-1) for v in value if v is not None]
    end = offset + sum(t.numel() for t in tensors)
    if not tensors or end > slot.numel():
        return None
    torch.cat(tensors, out=slot[offset:end])
    return _Block(offset, tuple(None if v is None else tuple(v.shape) for v in value), type(value)), end


def _rebuild(like: tuple | list, items: list) -> tuple | list:
    return type(like)(*items) if hasattr(like, "_fields") else type(like)(items)  # a NamedTuple takes fields


def _unpack(value: Any, slot: torch.Tensor) -> Any:
    """The inverse of :func:`_pack`; tensors are copied out, so the slot can be reused at once."""
    if isinstance(value, _Slice):
        return slot[value.offset:value.offset + int(np.prod(value.shape, dtype=np.int64))].view(value.shape).clone()
    if isinstance(value, _Block):
        sizes = [math.prod(shape) for shape in value.shapes if shape is not None]
        parts = iter(slot[value.offset:value.offset + sum(sizes)].clone().split(sizes))  # views of one copy
        return value.kind(None if shape is None else next(parts).view(shape) for shape in value.shapes)
    if isinstance(value, _Array):
        return torch.from_numpy(value.array)
    if isinstance(value, (tuple, list)):
        return _rebuild(value, [_unpack(v, slot) for v in value])
    if isinstance(value, dict):
        return {k: _unpack(v, slot) for k, v in value.items()}
    return value


def _serve(conn: Connection, registry: Sequence[Any], slots: torch.Tensor) -> None:
    """A helper's loop: run each task sent, reply ("ok", packed result) or ("error", exception)."""
    torch.set_num_threads(1)
    gc.freeze()  # the inherited objects stay out of collections: fewer copy-on-write pages
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):  # the parent closed the pipe or died
            return
        try:
            msg = pickle.loads(data)  # may fail: e.g. a task defined after the fork
            if msg is None:
                return
            task, refs, item, k = msg
            with torch.no_grad():  # packing copies results into the slot; no graph may record it
                reply = ("ok", _pack(task(*(registry[r] for r in refs), item), slots[k])[0])
        except BaseException as exc:  # noqa: BLE001 - it belongs to the parent, which raises it
            reply = ("error", exc)
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return
        except Exception as exc:  # noqa: BLE001 - an exception that does not pickle
            conn.send(("error", RuntimeError(f"{type(reply[1]).__name__}: {reply[1]} ({exc})")))


class _Helper:
    """The parent's handle on one helper: its pid, its end of the pipe, its result slots."""

    def __init__(self, pid: int, conn: Connection, slots: torch.Tensor):
        self.pid, self.conn, self.slots = pid, conn, slots
        self.free = list(range(len(slots)))
        self.in_flight: deque[int] = deque()  # slots of the items sent and not yet received, in order

    def send(self, task: Callable, refs: list[int], item: Any) -> None:
        k = self.free.pop()
        try:
            self.conn.send((task, refs, item, k))
        except OSError:
            raise self._lost() from None
        self.in_flight.append(k)

    def receive(self) -> Any:
        k = self.in_flight.popleft()
        try:
            status, value = self.conn.recv()
        except (EOFError, OSError):
            raise self._lost() from None
        result = _unpack(value, self.slots[k]) if status == "ok" else value
        self.free.append(k)  # copied out (or an error): the slot may take the next item
        if status == "error":
            raise value
        return result

    def _lost(self) -> DLFError:
        return DLFError(f"batch helper process {self.pid} {_fate(self.pid)} during the run; if memory is short, "
                        f"train with one batch worker (--threads 1)")


_REAPED = -1  # _wait_exit: the child was already reaped (no status left to read)


def _wait_exit(pid: int, timeout: float) -> int | None:
    """Reap child ``pid`` once it has ended, polling for up to ``timeout`` s: its wait status,
    ``_REAPED`` if it was reaped before, None if it is still running."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return _REAPED
        if done:
            return status
        if time.monotonic() > deadline:
            return None
        time.sleep(0.005)


def _fate(pid: int) -> str:
    """How a helper ended, from its exit status (given a second to become reapable)."""
    status = _wait_exit(pid, 1.0)
    if status is None:
        return "stopped answering"
    if status == _REAPED:
        return "ended"
    if os.WIFSIGNALED(status):
        return f"was killed by signal {os.WTERMSIG(status)}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


class ForkPool:
    """``map(task, items, *objs)`` in order, split between the caller and ``workers - 1`` forked helpers.

    ``registry``: the objects tasks may be given (identity counts); a ``map`` naming any other object
    runs in the calling process. ``slot_numel``: float32 capacity of a helper's result slot (larger
    results are pickled). Build it after :func:`share_parameters` and before anything else changes.
    """

    def __init__(self, workers: int, registry: Sequence[Any], slot_numel: int):
        self.workers, self.threads = workers, 1
        self._registry = list(registry)
        self._helpers: list[_Helper] = []
        try:
            for _ in range(workers - 1):
                self._helpers.append(self._fork(slot_numel))
        except BaseException:
            self.close()
            raise

    def _fork(self, slot_numel: int) -> _Helper:
        slots = _shared_floats(SLOTS * slot_numel).view(SLOTS, slot_numel)
        parent_end, child_end = Pipe()
        # Ctrl-C and SIGTERM wait until the helper ignores them: one arriving mid-fork would kill it
        stop = {signal.SIGINT, signal.SIGTERM}
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, stop)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            raise
        if pid == 0:  # the helper: never returns into the parent's code
            code = 0
            try:
                for sig in stop:
                    signal.signal(sig, signal.SIG_IGN)  # the parent decides when to stop
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
                for c in [parent_end] + [h.conn for h in self._helpers]:
                    c.close()  # else a helper would keep a sibling's pipe open after the parent's death
                _serve(child_end, self._registry, slots)
            except BaseException:  # noqa: BLE001
                code = 1
            finally:
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        child_end.close()
        return _Helper(pid, parent_end, slots)

    @property
    def pids(self) -> list[int]:
        return [h.pid for h in self._helpers]

    def map(self, task: Callable, items: Iterable, *objs: Any) -> Iterator:
        items = list(items)
        refs = [self._index(o) for o in objs]
        if not self._helpers or len(items) < 2 or None in refs:
            return (task(*objs, item) for item in items)
        return self._ordered(task, refs, objs, items)

    def _index(self, obj: Any) -> int | None:
        return next((i for i, o in enumerate(self._registry) if o is obj), None)

    def _ordered(self, task: Callable, refs: list[int], objs: tuple, items: list) -> Iterator:
        n = len(self._helpers) + 1
        # The caller computes item 0 while helper h computes items h+1, h+1+n, ...: results are yielded in
        # order, so a caller whose first item came later would sit idle until a helper's first was done
        # (measured: giving a helper item 0 made MOSI training epochs ~15% slower).
        queued = [deque(items[h + 1::n]) for h in range(n - 1)]
        try:
            for h in range(n - 1):
                self._feed(h, task, refs, queued[h])
            for j, item in enumerate(items):
                if j % n == 0:
                    yield task(*objs, item)
                    continue
                h = j % n - 1
                result = self._helpers[h].receive()
                self._feed(h, task, refs, queued[h])
                yield result
        finally:
            # An error, an interrupt or an abandoned map with replies still due: the pipes are out of step.
            if any(h.in_flight for h in self._helpers):
                self.close(kill=True)

    def _feed(self, h: int, task: Callable, refs: list[int], queue: deque) -> None:
        helper = self._helpers[h]
        while queue and helper.free:
            helper.send(task, refs, queue.popleft())

    def close(self, kill: bool = False) -> None:
        """Stop the helpers (at once with ``kill``; else after the item each is computing) and reap them."""
        for h in self._helpers:
            try:
                if kill:
                    os.kill(h.pid, signal.SIGKILL)
                else:
                    h.conn.send(None)
            except (OSError, ProcessLookupError):
                pass
            h.conn.close()
        for h in self._helpers:
            _reap(h.pid)
        self._helpers = []

    def __enter__(self) -> ForkPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close(kill=exc[0] is not None)


def _reap(pid: int, timeout: float = 10.0) -> None:
    """Wait for a helper that was told to stop; kill it if it has not within ``timeout`` s."""
    if _wait_exit(pid, timeout) is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
