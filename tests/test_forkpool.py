"""Batches on forked helper processes (dlf.forkpool): order, results, shared weights, failures, clean exits."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import NamedTuple

import pytest
import torch

from dlf.errors import DLFError
from dlf.forkpool import ForkPool, fork_available, share_parameters

pytestmark = pytest.mark.skipif(not fork_available(), reason="helper processes need os.fork (Linux)")


def _describe(box: list, item: int):
    """A task: where it ran, a float32 tensor (slot), an int64 tensor (pickled), nested containers."""
    return os.getpid(), torch.full((3,), float(item + box[0])), {"n": torch.tensor([item]), "none": None}


class _Pair(NamedTuple):
    a: torch.Tensor
    b: torch.Tensor


def _gradient_like(box: list, item: int):
    """A trainer-like result: a tuple of float32 tensors and Nones (packed as one block; one of them
    non-contiguous, one a scalar), a list of them, and containers packed item by item (a NamedTuple,
    a tuple that mixes dtypes)."""
    base = torch.arange(12, dtype=torch.float32) + 100 * item
    grads = (base[:6].view(2, 3), None, base.view(3, 4).t(), torch.tensor(float(item)))
    return grads, [base[:2]], _Pair(base[:1], base[1:2]), (base[:2], torch.tensor([item]))


def _weight(model: torch.nn.Module, item: int) -> torch.Tensor:
    return model.weight.detach().clone()


def _fail_on_three(box: list, item: int) -> int:
    if item == 3:
        raise ValueError(f"bad item {item}")
    return item


def _interrupt_in_caller(box: list, item: int) -> int:
    if item == 2:  # item 2 is the caller's own (worker 0 of 2), after it has the helper's item 1
        raise KeyboardInterrupt
    if item > 2:  # the helper is still busy with item 3 when the caller stops: only a kill ends it
        threading.Event().wait()
    return item


def _ignored_signals(pid: int) -> set[signal.Signals]:
    """The signals process ``pid`` ignores (SIG_IGN), from the SigIgn mask in /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as f:
        mask = int(next(line for line in f if line.startswith("SigIgn:")).split()[1], 16)
    return {s for s in signal.Signals if mask >> (s - 1) & 1}


def _gone(pid: int, timeout: float = 10.0) -> bool:
    """True once ``pid`` has exited (no process, or a zombie nobody has reaped yet)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_map_keeps_order_splits_items_round_robin_and_returns_results_intact():
    box = [10]
    with ForkPool(3, [box], slot_numel=64) as pool:
        helpers = pool.pids
        out = list(pool.map(_describe, range(7), box))
    pids = [o[0] for o in out]
    assert pids[0::3] == [os.getpid()] * 3  # worker 0 is the caller
    assert pids[1::3] == [helpers[0]] * 2 and pids[2::3] == [helpers[1]] * 2
    for i, (_, floats, extra) in enumerate(out):
        assert floats.dtype == torch.float32 and torch.equal(floats, torch.full((3,), float(i + 10)))
        assert extra["n"].dtype == torch.int64 and extra["n"].tolist() == [i] and extra["none"] is None
    assert all(_gone(pid) for pid in helpers)


def test_tensor_sequences_come_back_as_independent_copies_with_their_containers():
    box = [0]
    with ForkPool(2, [box], slot_numel=64) as pool:  # 8 items: each helper slot is reused
        out = list(pool.map(_gradient_like, range(8), box))
    for i, (grads, listed, pair, mixed) in enumerate(out):
        want = _gradient_like(box, i)
        assert type(grads) is tuple and grads[1] is None and type(listed) is list and type(pair) is _Pair
        for got, exp in zip((*grads[:1], *grads[2:], *listed, *pair, *mixed), (*want[0][:1], *want[0][2:],
                                                                              *want[1], *want[2], *want[3])):
            assert got.dtype == exp.dtype and got.shape == exp.shape and torch.equal(got, exp), i


def test_results_larger_than_the_slot_are_pickled_and_unregistered_objects_run_in_the_caller():
    box, other = [1], [5]
    with ForkPool(2, [box], slot_numel=2) as pool:  # each float32 result (3 values) exceeds the slot
        out = list(pool.map(_describe, range(4), box))
        local = list(pool.map(_describe, range(4), other))  # `other` was not registered: no helper knows it
    assert [o[0] == os.getpid() for o in out] == [True, False, True, False]
    assert all(torch.equal(o[1], torch.full((3,), float(i + 1))) for i, o in enumerate(out))
    assert all(o[0] == os.getpid() for o in local) and local[3][1][0] == 8.0


def test_parameter_updates_after_the_fork_reach_the_helpers():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    share_parameters(model)
    with ForkPool(2, [model], slot_numel=16) as pool:
        with torch.no_grad():
            model.weight.mul_(2).add_(1)  # as an optimizer step does: in place
        seen = list(pool.map(_weight, range(2), model))
    assert torch.equal(seen[1], model.weight.detach()) and torch.equal(seen[0], seen[1])


def test_a_helpers_error_reaches_the_caller_and_the_pool_goes_on_in_process():
    box = [0]
    with ForkPool(2, [box], slot_numel=8) as pool:
        helpers = pool.pids
        with pytest.raises(ValueError, match="bad item 3"):
            list(pool.map(_fail_on_three, range(6), box))
        assert pool.pids == [] and all(_gone(pid) for pid in helpers)  # out of step: stopped and reaped
        assert list(pool.map(_fail_on_three, [0, 1], box)) == [0, 1]


def test_an_interrupt_in_the_caller_stops_the_helpers():
    box = [0]
    pool = ForkPool(2, [box], slot_numel=8)
    helpers = pool.pids
    with pytest.raises(KeyboardInterrupt):
        list(pool.map(_interrupt_in_caller, range(6), box))
    assert pool.pids == [] and all(_gone(pid) for pid in helpers)


def test_a_task_defined_after_the_fork_is_reported_not_fatal():
    box = [0]
    with ForkPool(2, [box], slot_numel=8) as pool:
        def late(b, item):
            return item
        late.__qualname__ = "_late_task"
        globals()["_late_task"] = late  # importable in this process, unknown to the forked helper
        try:
            with pytest.raises(AttributeError, match="_late_task"):
                list(pool.map(late, range(2), box))
        finally:
            del globals()["_late_task"]


def test_a_killed_helper_gives_a_clear_error():
    box = [0]
    with ForkPool(2, [box], slot_numel=8) as pool:
        os.kill(pool.pids[0], signal.SIGKILL)
        with pytest.raises(DLFError, match=r"batch helper process \d+ was killed by signal 9"):
            list(pool.map(_describe, range(4), box))


@pytest.mark.slow
def test_helpers_ignore_sigint_and_exit_with_a_killed_parent():
    box = [0]
    with ForkPool(2, [box], slot_numel=8) as pool:
        os.kill(pool.pids[0], signal.SIGINT)  # at once, mid-fork, and again in the helper's loop
        assert [o[0] != os.getpid() for o in pool.map(_describe, range(2), box)] == [False, True]
        assert {signal.SIGINT, signal.SIGTERM} <= _ignored_signals(pool.pids[0])  # so the kernel drops them
        os.kill(pool.pids[0], signal.SIGINT)  # Ctrl-C reaches the whole process group: the parent decides
        assert [o[0] != os.getpid() for o in pool.map(_describe, range(2), box)] == [False, True]
    script = ("import os, signal, sys\nfrom dlf.forkpool import ForkPool\n"
              "pool = ForkPool(2, [], slot_numel=8)\nprint(pool.pids[0], flush=True)\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert _gone(int(proc.stdout.split()[0]))  # its pipe closed with the parent: the helper left


def test_a_helpers_error_on_its_last_item_keeps_the_pool_in_step():
    box = [0]
    with ForkPool(2, [box], slot_numel=8) as pool:
        for _ in range(3):  # each time the helper's only item fails, nothing else is due
            with pytest.raises(ValueError, match="bad item 3"):
                list(pool.map(_fail_on_three, [2, 3], box))
        assert len(pool.pids) == 1  # still in step: no reason to stop it
        out = list(pool.map(_describe, range(4), box))
        assert [o[0] == os.getpid() for o in out] == [True, False, True, False]
