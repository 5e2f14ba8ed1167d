"""The single-run trainer: official protocol, selection, early stopping, determinism, clear failures."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import dlf.train.loop as train_mod
from dlf.study.catalogue import get_variant, variant_config
from dlf.config import apply_overrides, preset
from dlf.errors import DLFError
from dlf.metrics import METRIC_KEYS, msa_metrics
from dlf.train.loop import Runtime, resolve_device, train_run

CPU1 = Runtime(device="cpu", threads=1)
# Shallow, fast settings; protocol tests also shrink the width (the protocol depends on neither).
FAST = {"model.n_levels": 1, "model.mem_levels": 1, "train.accumulation": 1, "train.lr": 1e-3}
NARROW = {"model.d_model": 10, "model.n_heads": 2, "loss.ortho_chunk": 10}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tiny_mosi):
    """The shared tiny synthetic MOSI (51 / 9 / 27 samples: 4 training micro-batches of 16)."""
    from dlf.data.mmsa import load_dataset

    return load_dataset(str(tiny_mosi))


def cfg_for(overrides: dict | None = None, variant: str = "full"):
    cfg = variant_config("mosi", get_variant(variant), FAST | NARROW)
    return apply_overrides(cfg, overrides or {}, source="test")


@pytest.mark.slow
def test_same_seed_gives_identical_runs_and_another_seed_does_not(tiny):
    cfg = cfg_for({"train.max_epochs": 2, "train.patience": 5})
    a, b = train_run(cfg, tiny, CPU1), train_run(cfg, tiny, CPU1)
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    assert a.history == b.history and a.test == b.test
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    c = train_run(apply_overrides(cfg, {"seed": 7, "train.max_epochs": 1}), tiny, CPU1)
    assert c.history[0]["train_loss"] != a.history[0]["train_loss"]


@pytest.mark.slow
def test_early_stopping_stops_patience_epochs_after_the_best(tiny):
    # min_delta 10: no epoch can beat the first by that much, so epoch 1 stays the best.
    cfg = cfg_for({"train.max_epochs": 20, "train.patience": 2, "train.min_delta": 10.0})
    r = train_run(cfg, tiny, CPU1)
    assert r.stopped_early and r.epochs < cfg.train.max_epochs
    assert (r.best_epoch, r.epochs) == (1, 3) and r.best_epoch + cfg.train.patience == r.epochs
    assert len(r.history) == r.epochs


@pytest.mark.slow
def test_epoch_cap_ends_a_run_that_keeps_improving(tiny, monkeypatch):
    real_evaluate = train_mod.evaluate

    def improving(model, data, batch_size=64, epoch=None, pool=None):  # validation MAE 1/epoch: always better
        pred, metrics = real_evaluate(model, data, batch_size, epoch=epoch, pool=pool)
        return pred, (metrics | {"mae": 1.0 / epoch}) if epoch is not None else metrics

    monkeypatch.setattr(train_mod, "evaluate", improving)
    r = train_run(cfg_for({"train.max_epochs": 2, "train.patience": 5}), tiny, CPU1)
    assert (r.best_epoch, r.epochs, r.stopped_early) == (2, 2, False)


@pytest.mark.slow
def test_selection_schedule_and_test_use_the_best_validation_epoch(tiny, monkeypatch):
    """Scripted validation MAEs drive selection, ReduceLROnPlateau and early stopping exactly."""
    script = [1.0, 0.8, 0.9, 0.8, 0.85, 0.8 - 5e-7]  # epoch 2 is best; 0.8 - 5e-7 is within min_delta
    snapshots, real_evaluate = {}, train_mod.evaluate

    def scripted(model, data, batch_size=64, epoch=None, pool=None):
        pred, metrics = real_evaluate(model, data, batch_size, epoch=epoch, pool=pool)
        if epoch is not None:  # validation pass of `epoch`
            snapshots[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
            metrics = metrics | {"mae": script[epoch - 1]}
        return pred, metrics

    monkeypatch.setattr(train_mod, "evaluate", scripted)
    cfg = cfg_for({"train.max_epochs": 50, "train.patience": 4, "train.plateau_patience": 1,
                   "train.val_decimals": 0})  # unrounded, so that min_delta alone decides epoch 6
    r = train_run(cfg, tiny, CPU1)
    assert (r.best_epoch, r.epochs) == (2, 6)
    assert [h["val_loss"] for h in r.history] == script
    # plateau: epochs 3 and 4 fail to improve on 0.8 -> halve after epoch 4; epochs 5, 6 -> halve again
    assert [h["lr"] for h in r.history] == [1e-3] * 4 + [5e-4] * 2
    assert all(torch.equal(r.state_dict[k], snapshots[2][k]) for k in r.state_dict)
    assert not all(torch.equal(r.state_dict[k], snapshots[6][k]) for k in r.state_dict)
    assert r.val["mae"] == 0.8 and r.val["acc2"] == r.history[1]["val_acc2"]
    # the test split was evaluated once, on the epoch-2 weights
    labels, pred = r.test_predictions["label"], r.test_predictions["pred"]
    assert r.test_predictions["id"] == tiny.splits["test"].ids and pred.shape == (len(tiny.splits["test"]),)
    np.testing.assert_array_equal(labels, tiny.splits["test"].labels.numpy())
    assert r.test == pytest.approx(msa_metrics(pred, labels))


@pytest.mark.slow
@pytest.mark.parametrize("decimals", [4, 0])
def test_selection_stopping_and_scheduler_read_the_validation_loss_rounded_as_configured(tiny, monkeypatch, decimals):
    """The official trainer rounds the validation L1 to 4 decimals before selection and the scheduler
    see it (DLF's preset); 0 keeps the exact value. Epoch 3 is better only before rounding."""
    script = [1.0, 0.80004, 0.79996, 0.80001, 0.79999]
    real_evaluate, real_step, stepped = train_mod.evaluate, torch.optim.lr_scheduler.ReduceLROnPlateau.step, []

    def scripted(model, data, batch_size=64, epoch=None, pool=None):
        pred, metrics = real_evaluate(model, data, batch_size, epoch=epoch, pool=pool)
        return pred, (metrics | {"mae": script[epoch - 1]}) if epoch is not None else metrics

    def step(self, value, *a, **k):
        stepped.append(value)
        return real_step(self, value, *a, **k)

    monkeypatch.setattr(train_mod, "evaluate", scripted)
    monkeypatch.setattr(torch.optim.lr_scheduler.ReduceLROnPlateau, "step", step)
    overrides = {"train.max_epochs": 5, "train.patience": 3} | ({} if decimals else {"train.val_decimals": 0})
    cfg = cfg_for(overrides)
    assert cfg.train.val_decimals == decimals
    r = train_run(cfg, tiny, CPU1)
    seen = [round(v, 4) for v in script] if decimals else script
    assert stepped == seen and [h["val_loss"] for h in r.history] == seen
    assert (r.best_epoch, r.epochs, r.stopped_early) == ((2, 5, True) if decimals else (3, 5, False))


@pytest.mark.slow
def test_accumulation_clipping_and_discarded_leftovers_follow_the_official_loop(tiny, monkeypatch):
    calls = {"step": 0, "zero": 0, "clip": 0}
    max_grad = []
    real_step, real_zero, real_clip = torch.optim.Adam.step, torch.optim.Adam.zero_grad, torch.nn.utils.clip_grad_value_

    def step(self, *a, **k):
        calls["step"] += 1
        return real_step(self, *a, **k)

    def zero(self, *a, **k):
        calls["zero"] += 1
        return real_zero(self, *a, **k)

    def clip(params, value):
        calls["clip"] += 1
        params = list(params)
        real_clip(params, value)
        max_grad.append(max(p.grad.abs().max().item() for p in params if p.grad is not None))

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    monkeypatch.setattr(torch.optim.Adam, "zero_grad", zero)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_value_", clip)
    cfg = cfg_for({"train.max_epochs": 2, "train.accumulation": 3, "train.clip_value": 0.05})
    from dlf.models.dlf.model import DLF

    real_forward, forwards = DLF.forward, []  # training forwards compute the loss outputs; evaluation's do not
    monkeypatch.setattr(DLF, "forward", lambda self, *a, with_losses=True: (
        forwards.append(1) if with_losses else None) or real_forward(self, *a, with_losses=with_losses))
    train_run(cfg, tiny, CPU1)
    n_micro = -(-len(tiny.splits["train"]) // 16)  # 51 samples -> 4 micro-batches: one step, one leftover
    # value clipping after every micro-batch backward; the leftover's gradients, which the official
    # loop computes and then discards, are not computed at all (no backward, no clip)
    assert calls == {"step": 2 * (n_micro // 3), "zero": 2 * -(-n_micro // 3), "clip": 2 * (n_micro // 3 * 3)}
    assert max(max_grad) == pytest.approx(0.05)
    assert len(forwards) == 2 * n_micro  # the leftover still runs forward: its loss is part of train_loss


@pytest.mark.slow
def test_the_trainers_foreach_adam_is_bit_identical_to_the_per_parameter_loop(tiny, monkeypatch):
    """The trainer asks Adam for foreach=True (speed); the arithmetic must stay the CPU default's loop."""
    real_adam, asked, forced = torch.optim.Adam, [], {}

    def adam(params, **kw):
        asked.append(kw.get("foreach"))
        return real_adam(params, **{**kw, **forced})

    monkeypatch.setattr(torch.optim, "Adam", adam)
    cfg = cfg_for({"train.max_epochs": 2, "train.accumulation": 2, "train.weight_decay": 1e-3})
    as_asked = train_run(cfg, tiny, CPU1)
    forced["foreach"] = False  # the per-parameter loop, torch's default on the CPU
    loop = train_run(cfg, tiny, CPU1)
    assert asked == [True, True]
    assert as_asked.history == loop.history
    for k, v in loop.state_dict.items():
        assert torch.equal(v, as_asked.state_dict[k]), k


@pytest.mark.slow
def test_on_epoch_gets_the_contract_names_and_can_stop_the_run(tiny):
    seen = []

    class Pruned(Exception):
        pass

    def sink(epoch, metrics):
        seen.append((epoch, metrics))
        if epoch == 2:
            raise Pruned

    with pytest.raises(Pruned):
        train_run(cfg_for({"train.max_epochs": 10}), tiny, CPU1, on_epoch=sink)
    assert [e for e, _ in seen] == [1, 2]
    names = set(seen[0][1])
    terms = {n for n in names if n.startswith("train_") and n != "train_loss"}
    assert {"train_task_f", "train_recon", "train_triplet", "train_ortho"} <= terms
    assert names == {"train_loss", "val_loss", "lr"} | terms | {f"val_{k}" for k in METRIC_KEYS}
    assert seen[0][1]["val_loss"] == round(seen[0][1]["val_mae"], 4)  # DLF's preset: 4 decimals


@pytest.mark.slow
def test_progress_callback_sees_every_micro_batch_and_epoch(tiny):
    events = []
    train_run(cfg_for({"train.max_epochs": 2}), tiny, CPU1, progress=lambda *e: events.append(e[:3]))
    def epoch(e):  # 51 training samples = 4 micro-batches
        return [("step", i, 4) for i in range(1, 5)] + [("epoch", e, 2)]

    assert events == epoch(1) + epoch(2)


def test_non_finite_loss_stops_with_an_error_naming_the_epoch(tiny):
    train = tiny.splits["train"]
    audio = train.audio.clone()
    audio[3, 5, 0] = float("nan")
    broken = dataclasses.replace(tiny, splits=tiny.splits | {"train": dataclasses.replace(train, audio=audio)})
    with pytest.raises(DLFError, match=r"^epoch 1: the training loss became nan"):
        train_run(cfg_for({"train.max_epochs": 3, "model.modalities": ["a"]}), broken, CPU1)


def test_accumulation_longer_than_an_epoch_is_refused(tiny):
    with pytest.raises(DLFError, match=r"train\.accumulation=10: synthetic-MOSI has only 4 training micro-batches"):
        train_run(preset("mosi"), tiny, CPU1)


def test_devices_and_global_torch_settings(tiny):
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DLFError, match="unknown device"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(DLFError, match="CUDA is not available"):
            resolve_device("cuda")
    def settings():
        return (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                torch.utils.deterministic.fill_uninitialized_memory)

    before, during = settings(), []
    r = train_run(cfg_for({"train.max_epochs": 1}), tiny, Runtime(device="cpu", threads=1),
                  on_epoch=lambda epoch, metrics: during.append(settings()))
    # inside: deterministic kernels, but no NaN fill of every torch.empty (its cost, not its guard)
    assert during == [(1, True, False)]
    assert settings() == before
    assert r.device == "cpu" and all(v.device.type == "cpu" for v in r.state_dict.values())


@pytest.mark.slow
def test_full_model_clearly_beats_audio_only_and_vision_only_on_synthetic_mosi():
    """The synthetic data plants most of the signal in language: a short run must show it.

    Measured (seeds 1111 and 2): full MAE 0.85-0.91, Acc-2 0.82-0.84; only A / only V MAE 1.30-1.33,
    Acc-2 0.50-0.61.
    """
    from dlf.config import DataConfig
    from dlf.data.mmsa import load_dataset

    data = load_dataset("synthetic-mosi", DataConfig(scale=0.2))  # 257 / 46 / 137 samples
    short = FAST | {"train.lr": 3e-4, "train.max_epochs": 3, "train.patience": 3}
    test = {v: train_run(variant_config("mosi", get_variant(v), short), data, CPU1).test
            for v in ("full", "only_a", "only_v")}
    for single in ("only_a", "only_v"):
        assert test["full"]["mae"] < test[single]["mae"] - 0.2, test
        assert test["full"]["acc2"] > test[single]["acc2"] + 0.15, test
