"""Lanes: concurrent micro-batches on the CPU, the trainer's way of using more than one core in a run.

DLF's tensors are small (a micro-batch of 16 x 46 steps x 50 channels, attention over 10 heads of
width 5), so intra-op threads hardly help: two threads were measured here to make a MOSI
training micro-step only ~8% faster than one. Independent batches are another matter. The
micro-batches of one gradient-accumulation window all see the same weights, so their gradients can
be computed at the same time on lanes, threads with one intra-op thread each (torch releases the GIL
inside its kernels), and then summed and clipped in order by the caller, which keeps the official
arithmetic: clip(... clip(clip(g_1) + g_2) ...). Evaluation batches are independent too.

Results do not depend on the number of lanes: each micro-batch draws its dropout masks from its
own generator (``dlf.models._kernels.dropout_rng``), seeded from the run seed, epoch and micro-batch index.
Lanes are used on the CPU only, and never around a module that draws from torch's global
generator (a fine-tuned BERT's dropout), where concurrent draws would be racy.

"Worker" means a process that executes runs (``dlf.run.workers``, a Ray task of ``dlf.cluster.ray_run``); lanes live
inside one run.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np
import torch

__all__ = ["LanePool", "plan_lanes", "batch_seed", "batch_generator", "MAX_LANES"]

T = TypeVar("T")
R = TypeVar("R")

# Measured on a 2-core machine: 2 lanes x 1 thread beat 1 x 2 by 15-35% per micro-step; more lanes
# contend for the GIL (every op's dispatch holds it), so larger budgets give each lane more threads.
# (Forked helper processes, which share no GIL, trained in 0.90-1.02x the time of these threads on
# 2 cores, median 0.96: too little to keep a second mechanism; see benchmarks/RESULTS.md.)
MAX_LANES = 2


def plan_lanes(device: torch.device, threads: int, requested: int | None = None,
               global_rng: bool = False) -> tuple[int, int]:
    """(lanes, intra-op threads per lane) for a thread budget; (1, threads) where lanes cannot help.

    Lanes share the GIL: at most ``MAX_LANES``, the budget split between them.
    """
    if device.type != "cpu" or global_rng or threads < 2:
        return 1, threads
    lanes = max(1, min(requested or MAX_LANES, threads))
    if lanes == 1:
        return 1, threads
    return lanes, max(1, threads // lanes)


def batch_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of micro-batch ``index`` of ``epoch``'s dropout stream: fixed by the run seed alone."""
    return ((seed * 1_000_003 + epoch) * 1_000_033 + index) % (1 << 63)


def batch_generator(seed: int, epoch: int, index: int) -> np.random.PCG64:
    """The dropout generator of micro-batch ``index`` of ``epoch``: numpy's PCG64, seeded by :func:`batch_seed`
    (its raw words are drawn about twice as fast as torch's CPU generator's, dlf.models._kernels)."""
    return np.random.PCG64(batch_seed(seed, epoch, index))


class LanePool:
    """``map(fn, items)`` in order, on ``lanes`` threads with ``threads`` intra-op threads each.

    One lane, or a single item, runs inline on the calling thread with its own thread count. Each
    call of ``fn`` runs with the caller's autograd mode, since grad and inference modes are per thread.
    """

    def __init__(self, lanes: int = 1, threads: int | None = None):
        self.lanes, self.threads = lanes, threads
        self._pool = (ThreadPoolExecutor(lanes, thread_name_prefix="dlf-lane", initializer=self._init)
                      if lanes > 1 else None)

    def _init(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)  # per thread: OpenMP and MKL settings are thread-local

    def map(self, fn: Callable[..., R], items: Iterable[T], *objs: Any) -> Iterator[R]:
        """``fn(*objs, item)`` for each item, results in order."""
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

    def __enter__(self) -> LanePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
