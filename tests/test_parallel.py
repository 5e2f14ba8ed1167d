"""Concurrent micro-batches (dlf.parallel): same results for any number of workers, official arithmetic."""
from __future__ import annotations

import os
import threading

import pytest
import torch

from dlf.catalogue import get_variant, variant_config
from dlf.config import apply_overrides
from dlf.errors import DLFError
from dlf.forkpool import MAX_PROCESS_WORKERS, ForkPool, fork_available
from dlf.layers import dropout, dropout_rng, keep_mask
from dlf.parallel import BatchPool, batch_generator, plan_workers
from dlf.train import Runtime, _accumulate, train_run

CPU = torch.device("cpu")


def test_plan_workers_uses_workers_only_where_they_can_help():
    assert plan_workers(CPU, 2) == (2, 1)
    assert plan_workers(CPU, 8) == (2, 4)  # more workers would queue on the GIL: threads go to each
    assert plan_workers(CPU, 1) == (1, 1)
    assert plan_workers(CPU, 2, requested=1) == (1, 2)
    assert plan_workers(CPU, 2, global_rng=True) == (1, 2)  # a fine-tuned BERT's dropout is racy
    assert plan_workers(torch.device("cuda"), 4) == (1, 4)
    # forked processes (dlf.forkpool) do not share a GIL: up to MAX_PROCESS_WORKERS, one thread each
    assert plan_workers(CPU, 2, processes=True) == (2, 1)
    assert plan_workers(CPU, 8, processes=True) == (MAX_PROCESS_WORKERS, 1)
    assert plan_workers(CPU, 3, requested=1, processes=True) == (1, 3)
    assert plan_workers(CPU, 2, global_rng=True, processes=True) == (1, 2)


def test_dropout_rng_makes_masks_reproducible_per_thread_and_restores():
    with dropout_rng(torch.Generator().manual_seed(5)):
        a = keep_mask((7, 9), 0.3)
        with dropout_rng(None):  # nested: back to the global generator, then restored
            torch.manual_seed(0)
            g = keep_mask((7, 9), 0.3)
        a2 = keep_mask((7, 9), 0.3)
    with dropout_rng(torch.Generator().manual_seed(5)):
        b = keep_mask((7, 9), 0.3)
        b2 = dropout(torch.ones(7, 9), 0.3, training=True)
    torch.manual_seed(0)
    assert torch.equal(a, b) and torch.equal(a2, b2) and torch.equal(g, keep_mask((7, 9), 0.3))
    assert not torch.equal(a, a2)
    seeds = {batch_generator(s, e, i).initial_seed() for s in (1, 2) for e in (1, 2) for i in range(10)}
    assert len(seeds) == 40  # every (seed, epoch, micro-batch) has its own stream
    assert batch_generator(2 ** 62, 3, 4).initial_seed() < 2 ** 63  # any seed the config accepts


def test_batch_pool_keeps_order_runs_on_workers_and_carries_the_autograd_mode():
    names = []

    def work(i):
        names.append(threading.current_thread().name)
        return i * i, torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    with BatchPool(2, 1) as pool:
        out = list(pool.map(work, range(6)))
        assert [o[0] for o in out] == [i * i for i in range(6)] and all(o[1] and not o[2] for o in out)
        assert all(n.startswith("dlf-batch") for n in names)
        with torch.inference_mode():
            assert all(o[2] and not o[1] for o in pool.map(work, range(3)))
        names.clear()
        assert list(pool.map(work, [4]))[0][0] == 16 and names == [threading.current_thread().name]  # inline
    with pytest.raises(ZeroDivisionError), BatchPool(2, 1) as pool:
        list(pool.map(lambda i: 1 // (i - 2), range(4)))  # a worker's error reaches the caller


def test_accumulate_then_clip_equals_sequential_backward_and_clip():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1), torch.nn.Linear(3, 3))
    params = list(net.parameters())
    batches = [torch.randn(5, 6) * 4 for _ in range(3)]

    def loss(x):
        return net[:3](x).pow(2).sum()

    for x in batches:  # what the official loop does: backward into .grad, clip the running sum
        loss(x).backward()
        torch.nn.utils.clip_grad_value_(params, 0.6)
    expected = [None if p.grad is None else p.grad.clone() for p in params]
    net.zero_grad(set_to_none=True)
    for x in batches:
        _accumulate(params, torch.autograd.grad(loss(x), params, allow_unused=True))
        torch.nn.utils.clip_grad_value_(params, 0.6)
    # the unused layer's weight and bias: no gradient either way (Adam then skips them)
    assert expected[-2:] == [None, None] and params[-1].grad is None and params[-2].grad is None
    assert all(torch.equal(e, p.grad) for e, p in zip(expected[:-2], params[:-2]))
    assert any((e.abs() == 0.6).any() for e in expected[:-2])  # clipping did act


@pytest.fixture(scope="module")
def tiny(tiny_mosi):
    from dlf.data import load_dataset

    return load_dataset(str(tiny_mosi))


@pytest.mark.slow
@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_two_workers_train_exactly_like_one(tiny, processes, monkeypatch):
    """Two workers with one thread each (threads or forked processes) give bit-identical runs to one worker."""
    if processes and not fork_available():
        pytest.skip("helper processes need os.fork (Linux)")
    helpers: list[int] = []

    class Recorded(ForkPool):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            helpers.extend(self.pids)

    monkeypatch.setattr("dlf.train.ForkPool", Recorded)
    overrides = {"model.n_levels": 1, "model.mem_levels": 1, "model.d_model": 10, "model.n_heads": 2,
                 "loss.ortho_chunk": 10, "train.accumulation": 2, "train.max_epochs": 2, "train.patience": 5}
    cfg = apply_overrides(variant_config("mosi", get_variant("full"), overrides), {}, source="test")
    before = torch.get_num_threads()
    one = train_run(cfg, tiny, Runtime(device="cpu", threads=1, batch_workers=1))
    two = train_run(cfg, tiny, Runtime(device="cpu", threads=2, batch_workers=2, batch_processes=processes))
    assert one.history == two.history and one.test == two.test
    assert all(torch.equal(one.state_dict[k], two.state_dict[k]) for k in one.state_dict)
    assert torch.get_num_threads() == before  # the main thread's budget is restored after the run
    assert len(helpers) == (1 if processes else 0)
    for pid in helpers:  # the helper was stopped and reaped with the run
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_helper_processes_are_refused_where_fork_is_missing(tiny, monkeypatch):
    monkeypatch.setattr("dlf.train.fork_available", lambda: False)
    cfg = variant_config("mosi", get_variant("full"), {"train.accumulation": 2, "train.max_epochs": 1})
    with pytest.raises(DLFError, match=r"batch_processes=True\) needs os.fork"):
        train_run(cfg, tiny, Runtime(device="cpu", threads=2, batch_processes=True))


@pytest.mark.parametrize("fork", [True, False], ids=["with-fork", "without-fork"])
@pytest.mark.parametrize("budget, workers", [(2, 2), (3, 3), (8, MAX_PROCESS_WORKERS)])
def test_default_workers_are_processes_where_fork_exists_and_threads_elsewhere(tiny, budget, workers, fork,
                                                                               monkeypatch):
    from dlf.model import build_model
    from dlf.train import _batch_pool, torch_settings

    if fork and not fork_available():
        pytest.skip("helper processes need os.fork (Linux)")
    monkeypatch.setattr("dlf.train.fork_available", lambda: fork)
    small = {"model.d_model": 10, "model.n_heads": 2, "loss.ortho_chunk": 10}
    cfg = variant_config("mosi", get_variant("full"), small)
    model = build_model(cfg, tiny.dims, tiny.seq_lens)
    with torch_settings(CPU, budget), _batch_pool(model, cfg, CPU, Runtime(device="cpu")) as pool:
        if fork:  # one process per budget thread (capped), each running one intra-op thread
            assert type(pool) is ForkPool and pool.workers == workers and torch.get_num_threads() == 1
        else:  # threads share the GIL: two, the budget split between them
            assert type(pool) is BatchPool and pool.workers == 2 and torch.get_num_threads() == budget // 2
