"""dlf.startup: the collector is paused for start-up, then frozen and back on once training starts."""
from __future__ import annotations

import subprocess
import sys

import pytest


def test_gc_is_paused_then_settled_and_an_already_disabled_gc_is_left_alone():
    code = """
import gc
from dlf import startup
startup.defer_gc()
assert not gc.isenabled()
before = gc.get_freeze_count()
startup.settle_gc()
assert gc.isenabled() and gc.get_freeze_count() > before
startup.settle_gc()  # idempotent
gc.disable()  # a caller's own choice is not undone
startup.defer_gc(); startup.settle_gc()
assert not gc.isenabled()
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.slow
def test_training_settles_the_collector(tiny_mosi):
    """The CLI pauses the collector; the first training run turns it back on (no leak of cycles)."""
    code = f"""
import gc
from dlf import startup
from dlf.catalogue import get_variant, variant_config
from dlf.config import apply_overrides
from dlf.data import load_dataset
from dlf.train import Runtime, train_run
startup.defer_gc()
cfg = apply_overrides(variant_config("mosi", get_variant("only_a")), {{"model.n_levels": 1, "model.mem_levels": 1,
    "train.accumulation": 1, "train.max_epochs": 1}}, source="test")
train_run(cfg, load_dataset({str(tiny_mosi)!r}), Runtime(device="cpu", threads=1))
assert gc.isenabled()
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
