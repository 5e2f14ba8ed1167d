"""dlf.startup: entry points pause the collector for start-up and settle it (frozen, back on) before training;
the trainer itself leaves it alone."""
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
def test_the_train_command_settles_the_collector_before_training_and_train_run_leaves_it_alone(tiny_mosi):
    """The CLI entry point pauses the collector for its imports; by the time the run trains it is back on,
    with start-up's objects (torch's included) frozen. ``train_run`` itself never changes the setting."""
    code = f"""
import gc, sys
from dlf import cli
from dlf import startup
import dlf.train.loop

seen = []
real = dlf.train.loop.train_run

def spy(*args, **kwargs):
    seen.append((gc.isenabled(), gc.get_freeze_count() > 100_000))
    startup.defer_gc()  # paused again: the run must not turn it back on
    result = real(*args, **kwargs)
    seen.append(gc.isenabled())
    startup.settle_gc()
    return result

dlf.train.loop.train_run = spy
sys.argv = ["dlf-ablate", "train", "--dataset", {str(tiny_mosi)!r}, "--variant", "only_a", "--device", "cpu",
            "--threads", "1", "--json", "--set", "model.n_levels=1", "--set", "model.mem_levels=1",
            "--set", "train.accumulation=1", "--set", "train.max_epochs=1"]
try:
    cli.main()
except SystemExit as end:
    assert not end.code, end.code
assert seen == [(True, True), False], seen
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr


@pytest.mark.slow
def test_a_study_run_in_the_cli_process_settles_the_collector_before_its_first_run():
    """``run`` with one worker trains in its own process (dlf.run.local): the collector is back on by then."""
    code = """
import gc
from types import SimpleNamespace
from dlf.run import local as pool
from dlf import startup
from dlf.run.executor import FINISHED, RunOutcome

startup.defer_gc()
seen = []

def execute(spec, uri, runtime, on_epoch=None, wait=False):
    seen.append(gc.isenabled())
    return RunOutcome(FINISHED, spec.key)

pool.execute_run = execute
pool._run_inline([SimpleNamespace(key="k")], "sqlite:///unused.db", {"device": "cpu"}, lambda *a: None,
                 lambda event: None)
assert seen == [True], seen
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
