"""Concurrent micro-batches on lanes (dlf.train.lanes): same results for any number of lanes, official arithmetic."""
from __future__ import annotations

import threading

import pytest
import torch

from dlf.study.catalogue import get_variant, variant_config
from dlf.config import apply_overrides
from dlf.models._kernels import dropout, dropout_rng, keep_mask
from dlf.train.lanes import LanePool, batch_generator, batch_seed, plan_lanes
from dlf.train.loop import Runtime, _accumulate, train_run

CPU = torch.device("cpu")


def test_plan_lanes_uses_lanes_only_where_they_can_help():
    assert plan_lanes(CPU, 2) == (2, 1)
    assert plan_lanes(CPU, 8) == (2, 4)  # more lanes would queue on the GIL: threads go to each
    assert plan_lanes(CPU, 1) == (1, 1)
    assert plan_lanes(CPU, 2, requested=1) == (1, 2)
    assert plan_lanes(CPU, 3, requested=3) == (3, 1)
    assert plan_lanes(CPU, 2, global_rng=True) == (1, 2)  # a fine-tuned BERT's dropout is racy
    assert plan_lanes(torch.device("cuda"), 4) == (1, 4)


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
    seeds = {batch_seed(s, e, i) for s in (1, 2) for e in (1, 2) for i in range(10)}
    assert len(seeds) == 40  # every (seed, epoch, micro-batch) has its own stream
    assert 0 <= batch_seed(2 ** 62, 3, 4) < 2 ** 63  # any seed the config accepts


def test_micro_batch_generators_draw_reproducible_masks_of_the_right_rate():
    masks = []
    for _ in range(2):
        with dropout_rng(batch_generator(1111, 2, 3)):
            masks.append(keep_mask((400, 500), 0.3))
    with dropout_rng(batch_generator(1111, 2, 4)):
        other = keep_mask((400, 500), 0.3)
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], other)
    assert torch.equal(masks[0].unique(), torch.tensor([0.0, 1 / 0.7]))
    assert abs((masks[0] == 0).float().mean().item() - 0.3) < 0.005  # 200k draws: 5 standard errors


def test_lane_pool_keeps_order_runs_on_lanes_and_carries_the_autograd_mode():
    names = []

    def work(i):
        names.append(threading.current_thread().name)
        return i * i, torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    with LanePool(2, 1) as pool:
        out = list(pool.map(work, range(6)))
        assert [o[0] for o in out] == [i * i for i in range(6)] and all(o[1] and not o[2] for o in out)
        assert all(n.startswith("dlf-lane") for n in names)
        with torch.inference_mode():
            assert all(o[2] and not o[1] for o in pool.map(work, range(3)))
        names.clear()
        assert list(pool.map(work, [4]))[0][0] == 16 and names == [threading.current_thread().name]  # inline
    with pytest.raises(ZeroDivisionError), LanePool(2, 1) as pool:
        list(pool.map(lambda i: 1 // (i - 2), range(4)))  # a lane's error reaches the caller


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
    from dlf.data.mmsa import load_dataset

    return load_dataset(str(tiny_mosi))


@pytest.mark.slow
def test_two_lanes_train_exactly_like_one(tiny):
    """Two lanes with one thread each give bit-identical runs to one lane."""
    overrides = {"model.n_levels": 1, "model.mem_levels": 1, "model.d_model": 10, "model.n_heads": 2,
                 "loss.ortho_chunk": 10, "train.accumulation": 2, "train.max_epochs": 2, "train.patience": 5}
    cfg = apply_overrides(variant_config("mosi", get_variant("full"), overrides), {}, source="test")
    before = torch.get_num_threads()
    one = train_run(cfg, tiny, Runtime(device="cpu", threads=1, lanes=1))
    two = train_run(cfg, tiny, Runtime(device="cpu", threads=2, lanes=2))
    assert one.history == two.history and one.test == two.test
    assert all(torch.equal(one.state_dict[k], two.state_dict[k]) for k in one.state_dict)
    assert torch.get_num_threads() == before  # the main thread's budget is restored after the run


@pytest.mark.parametrize("accumulation", [1, 10])
@pytest.mark.parametrize("budget", [2, 3, 8])
@pytest.mark.slow
def test_default_lanes_share_the_budget(tiny, budget, accumulation):
    """Two lanes by default; the caller keeps the whole budget only when training has no windows to overlap."""
    from dlf.models.dlf.model import build_model
    from dlf.train.loop import _lane_pool, torch_settings

    small = {"model.d_model": 10, "model.n_heads": 2, "loss.ortho_chunk": 10, "train.accumulation": accumulation}
    cfg = variant_config("mosi", get_variant("full"), small)
    model = build_model(cfg, tiny.dims, tiny.seq_lens)
    with torch_settings(CPU, budget), _lane_pool(model, cfg, CPU, Runtime(device="cpu")) as pool:
        assert type(pool) is LanePool and pool.lanes == 2 and pool.threads == budget // 2
        assert torch.get_num_threads() == (budget // 2 if accumulation > 1 else budget)
