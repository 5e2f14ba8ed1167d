"""Concurrent micro-batches on the CPU: the trainer's way of using more than one core.

DLF's tensors are small (a micro-batch of 16 x 46 steps x 50 channels, attention over 10 heads of
width 5), so intra-op threads hardly help: two threads were measured here to make a MOSI
training micro-step only ~8% faster than one. Independent batches are another matter. The
micro-batches of one gradient-accumulation window all see the same weights, so their gradients can
be computed at the same time on worker threads (one intra-op thread each; torch releases the GIL
inside its kernels) and then summed and clipped in order by the caller, which keeps the official
arithmetic: clip(... clip(clip(g_1) + g_2) ...). Evaluation batches are independent too.

Results do not depend on the number of workers: each micro-batch draws its dropout masks from its
own generator (``dlf.layers.dropout_rng``), seeded from the run seed, epoch and micro-batch index.
Workers are used on the CPU only, and never around a module that draws from torch's global
generator (a fine-tuned BERT's dropout), where concurrent draws would be racy.

``dlf.forkpool.ForkPool`` offers the same ``map`` on forked helper processes, which do not share a GIL:
the trainer uses it wherever ``os.fork`` exists (Linux) and these threads elsewhere. ``plan_workers`` sizes either.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, TypeVar

import torch

from dlf.forkpool import MAX_PROCESS_WORKERS

__all__ = ["BatchPool", "plan_workers", "batch_generator", "MAX_BATCH_WORKERS"]

T = TypeVar("T")
R = TypeVar("R")

# Measured on a 2-core machine: 2 workers x 1 thread beat 1 x 2 by 15-35% per micro-step; more workers
# contend for the GIL (every op's dispatch holds it), so larger budgets give each worker more threads.
MAX_BATCH_WORKERS = 2


def plan_workers(device: torch.device, threads: int, requested: int | None = None,
                 global_rng: bool = False, processes: bool = False) -> tuple[int, int]:
    """(workers, intra-op threads per worker) for a thread budget; (1, threads) where workers cannot help.

    Threads share the GIL: at most ``MAX_BATCH_WORKERS``, the budget split between them. Processes
    (``dlf.forkpool``): up to ``MAX_PROCESS_WORKERS``, one thread each (a forked helper must not use
    OpenMP teams).
    """
    if device.type != "cpu" or global_rng or threads < 2:
        return 1, threads
    workers = max(1, min(requested or (MAX_PROCESS_WORKERS if processes else MAX_BATCH_WORKERS), threads))
    if workers == 1:
        return 1, threads
    return workers, 1 if processes else max(1, threads // workers)


def batch_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The dropout generator of micro-batch ``index`` of ``epoch``: fixed by the run seed alone."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_033 + index) % (1 << 63))


class BatchPool:
    """``map(fn, items)`` in order, on ``workers`` threads with ``threads`` intra-op threads each.

    One worker, or a single item, runs inline on the calling thread with its own thread count. Each
    call of ``fn`` runs with the caller's autograd mode, since grad and inference modes are per thread.
    """

    def __init__(self, workers: int = 1, threads: int | None = None):
        self.workers, self.threads = workers, threads
        self._pool = (ThreadPoolExecutor(workers, thread_name_prefix="dlf-batch", initializer=self._init)
                      if workers > 1 else None)

    def _init(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)  # per thread: OpenMP and MKL settings are thread-local

    def map(self, fn: Callable[..., R], items: Iterable[T], *objs: Any) -> Iterator[R]:
        """``fn(*objs, item)`` for each item, results in order (the interface of ``dlf.forkpool.ForkPool``)."""
        items = list(items)
        if self._pool is None or len(items) == 1:
            return (fn(*objs, item) for item in items)
        grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

        def call(item: T) -> R:
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                return fn(*objs, item)

        return self._pool.map(call, items)

    def close(self) -> None:
        """Stop: queued calls are dropped, running ones (one micro-batch each) are waited for."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> BatchPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
