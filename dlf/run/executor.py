"""Execute one run spec safely: claim its key, skip it when done, else train, track and finish.

Claim safety: an OS file lock per (study, run key) (``flock`` under ``<state>/locks/``, see
:func:`dlf.run.tracking.local_state_dir`) is held for the whole check-train-finish sequence. Per study,
because that sequence looks for the key in the study's own experiment: the same configuration in
two studies is two runs, which must not wait on each other. The kernel drops the lock when its
process dies, SIGKILL included, so a lock can never go stale, and whoever holds it knows that a
seed run with the same key still marked RUNNING belongs to a dead process: it is marked FAILED and
the key is trained again. Two local processes therefore never train the same key of a study at
once, and a FINISHED key is never trained twice in a study. (Across machines a Ray lease
(dlf.cluster.claims) claims (study, key); this lock only covers one host.)
"""
from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping

from dlf import interrupts
from dlf.run import tracking
from dlf.run.mlflow_view import log_dataset_input
from dlf.errors import DLFError

FINISHED, CACHED, FAILED = "finished", "cached", "failed"
BUSY = "busy"  # internal: another process holds the key's lock (only with wait=False)


@dataclass
class RunOutcome:
    status: str  # 'finished' | 'cached' | 'failed'
    key: str
    run_id: str | None = None
    error: str | None = None  # one line, for 'failed'
    seconds: float = 0.0  # wall time of execute_run, lock wait included
    train_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunOutcome:
        return cls(**d)


def key_lock(key: str, tracking_uri: str):
    """The OS file lock named ``key`` for the store ``tracking_uri``."""
    from filelock import FileLock

    folder = tracking.local_state_dir(tracking_uri) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    # preserve_lock_file: never unlink (no unlink-while-waiting race) and never fall back to a
    # "soft" lock that a killed process would leave behind.
    return FileLock(folder / f"{key}.lock", preserve_lock_file=True, thread_local=False)


def run_lock(spec, tracking_uri: str):
    """The lock of ``spec``'s key within its study (the study hashed: any name makes a file name)."""
    study = hashlib.sha256(spec.study.encode()).hexdigest()[:16]
    return key_lock(f"{study}-{spec.key}", tracking_uri)


def execute_run(spec, tracking_uri: str, runtime=None, on_epoch: Callable[[int, dict], None] | None = None,
                wait: bool = True) -> RunOutcome:
    """Run ``spec`` unless its key already FINISHED; never raises for a failing run.

    With ``wait=False`` a key locked by another process returns at once with status 'busy', so a
    scheduler can do other work first. KeyboardInterrupt marks the run KILLED and propagates.
    """
    from filelock import Timeout

    start = time.monotonic()
    lock = run_lock(spec, tracking_uri)
    try:
        lock.acquire(timeout=-1 if wait else 0)
    except Timeout:
        return RunOutcome(BUSY, spec.key, seconds=time.monotonic() - start)
    try:
        outcome = _execute_claimed(spec, tracking_uri, runtime, on_epoch)
    except Exception as err:  # noqa: BLE001 - tracking store trouble, bad data: the outcome
        outcome = RunOutcome(FAILED, spec.key, error=tracking.one_line(err))
    finally:
        lock.release()
    outcome.seconds = time.monotonic() - start
    return outcome


def _execute_claimed(spec, uri: str, runtime, on_epoch) -> RunOutcome:
    c = tracking.client(uri)
    exp = tracking.ensure_experiment(c, spec.study, uri)
    runs = tracking.runs_with_key(c, exp, spec.key)
    done = [r for r in runs if r.info.status == "FINISHED"]
    if done:
        return RunOutcome(CACHED, spec.key, run_id=done[0].info.run_id)
    _fail_abandoned(c, runs, "abandoned: the process running it stopped; the key was run again")
    from dlf.train.loop import Runtime, resolve_device

    runtime = runtime or Runtime()
    _warm_imports(spec)
    env = tracking.environment(str(resolve_device(runtime.device)), runtime.threads)
    parent, _ = tracking.ensure_parents(c, exp, [spec])[(spec.variant, spec.dataset)]
    run_id, finished = None, False
    try:  # from here on an interrupt or error closes the run (only SIGKILL leaves it RUNNING)
        with interrupts.held():  # an interrupt right after the row's commit still finds run_id
            run_id = tracking.create_seed_run(c, exp, parent, spec, env)
        tracking.log_run_inputs(c, run_id, spec, env)
        logger = tracking.EpochLogger(c, run_id, forward=on_epoch)
        on_data = functools.partial(log_dataset_input, c, [run_id, parent], spec.dataset, spec.config.data)
        result, dataset = _train(spec, runtime, logger, on_data)
        with interrupts.held():  # the trained run is completed; an interrupt now stops what follows
            logger.flush()
            tracking.finish_seed_run(c, run_id, spec, result, dataset)
            finished = True
    except KeyboardInterrupt:
        if run_id is not None and not finished:
            with interrupts.ignored():
                _close_quietly(c, run_id, "KILLED", "interrupted (SIGINT/SIGTERM) during the run")
        raise
    except Exception as err:  # noqa: BLE001 - a failing run is an outcome, not a crash
        if run_id is None:  # the store refused the run: execute_run reports it
            raise
        _close_quietly(c, run_id, "FAILED", tracking.one_line(err))
        return RunOutcome(FAILED, spec.key, run_id=run_id, error=tracking.one_line(err))
    return RunOutcome(FINISHED, spec.key, run_id=run_id, train_seconds=result.train_seconds)


def _train(spec, runtime, logger, on_data: Callable[[Any], None]):
    """Load and check the data, hand it to ``on_data`` (the run's dataset input), train."""
    from dlf.data.mmsa import load_dataset
    from dlf.train.loop import train_run

    dataset = load_dataset(spec.data_path, spec.config.data)
    if dataset.fingerprint != spec.data_fingerprint:
        raise DLFError(f"{spec.data_path}: the data file changed after the study was planned (fingerprint "
                       f"{dataset.fingerprint[:12]}, planned {spec.data_fingerprint[:12]}); run the study again")
    on_data(dataset)
    return train_run(spec.config, dataset, runtime, on_epoch=logger), dataset


def _warm_imports(spec) -> None:
    """Load what the trainer imports lazily, with Ctrl-C deferred until it is done.

    torch loads ~800 modules (dynamo, sympy) on the first ``use_deterministic_algorithms`` call,
    and the BERT text modes load transformers. An interrupt landing inside such an import was
    measured to be swallowed while leaving sympy half-imported, so every later run of the process
    failed; imported here, before the run exists, the interrupt arrives afterwards, cleanly.
    """
    with interrupts.held():
        try:
            import torch._inductor.config  # noqa: F401 - private, hence the guard
        except ImportError:
            pass
        from dlf.models.registry import family_of

        family_of(spec.config)  # the run's family: its model, losses and whatever they import
        if spec.config.model.text_encoder != "features":
            import transformers  # noqa: F401


def _fail_abandoned(c, runs, reason: str) -> None:
    for r in runs:
        if r.info.status in ("RUNNING", "SCHEDULED"):
            tracking.end_run(c, r.info.run_id, "FAILED", reason)


def mark_abandoned(spec, tracking_uri: str, reason: str, timeout: float = 30.0) -> None:
    """Mark ``spec``'s RUNNING seed runs FAILED (after its worker died); a no-op if the run is
    locked by a live process, which then owns it."""
    from filelock import Timeout

    lock = run_lock(spec, tracking_uri)
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        return
    try:
        c = tracking.client(tracking_uri)
        exp = tracking.ensure_experiment(c, spec.study, tracking_uri)
        _fail_abandoned(c, tracking.runs_with_key(c, exp, spec.key), reason)
    finally:
        lock.release()


def _close_quietly(c, run_id: str, status: str, reason: str) -> None:
    """Close the run; if even that fails (store gone), the next claim marks it FAILED instead."""
    try:
        tracking.end_run(c, run_id, status, reason)
    except Exception:  # noqa: BLE001
        pass
