"""Create or resume the Optuna study, then run the search in this process or in spawned workers.

A study remembers (as user attributes) the canonical search space and the setup it was started
with (objectives, dataset, variant, base config). Resuming with a different space or setup is
refused with one line saying how to proceed. The official weights are enqueued as trial 0 only
when the study is new.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import time
from typing import Any, Callable

import optuna

from dlf.errors import DLFError
from dlf.tune.space import parse_space
from dlf.tune.storage import claim_lock, open_storage, reap_stale
from dlf.tune.worker import TuneSetup, load_tune_study, run_worker

SPACE_ATTR, SETUP_ATTR = "dlf.space", "dlf.setup"


def setup_identity(setup: TuneSetup) -> dict[str, Any]:
    """What must not change when a study is resumed (the space is checked separately)."""
    searched = set(setup.space)
    base = {k: v for k, v in _flat(setup.base.to_dict()).items() if k not in searched}
    return {"objectives": list(setup.objectives), "dataset": setup.dataset, "variant": setup.variant,
            "base_config": base}


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def open_study(setup: TuneSetup) -> tuple[optuna.Study, bool]:
    """(study, created): create it, or resume it after checking space and setup."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(setup.storage)
    space = parse_space(setup.space, setup.space_source, setup.base)
    with claim_lock(setup.storage):  # two commands starting a new study at once enqueue trial 0 once
        study = optuna.create_study(study_name=setup.study_name, storage=storage, load_if_exists=True,
                                    directions=setup.directions)
        attrs = study.user_attrs
        if SPACE_ATTR not in attrs and not study.trials:
            study.set_user_attr(SPACE_ATTR, space.canonical_json())
            study.set_user_attr(SETUP_ATTR, json.dumps(setup_identity(setup), sort_keys=True))
            study.enqueue_trial(space.baseline(setup.base), user_attrs={"dlf.official": True})
            return study, True
    _check_resume(setup, space, attrs)
    return study, False


def _check_resume(setup: TuneSetup, space: Any, attrs: dict[str, Any]) -> None:
    where = f"{setup.storage}: study {setup.study_name!r}"
    if attrs.get(SPACE_ATTR) != space.canonical_json():
        old = sorted(json.loads(attrs.get(SPACE_ATTR) or "{}"))
        raise DLFError(f"{where} was started with a different search space (over {', '.join(old) or 'nothing'}); "
                       f"use a new --study-name to search the new space, or rerun with the original --space")
    stored = json.loads(attrs.get(SETUP_ATTR) or "{}")
    current = setup_identity(setup)
    for key in ("objectives", "dataset", "variant", "base_config"):
        if stored.get(key) != current[key]:
            diff = _first_difference(stored.get(key), current[key])
            raise DLFError(f"{where} was started with a different {key}{diff}; use a new --study-name, "
                           f"or rerun with the original settings")


def _first_difference(old: Any, new: Any) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            if old.get(k) != new.get(k):
                return f" ({k}: {old.get(k)!r} then, {new.get(k)!r} now)"
    return f" ({old!r} then, {new!r} now)"


def run_search(setup: TuneSetup, runtime: Any, envs: list[dict[str, str]],
               on_update: Callable[[optuna.Study], None]) -> list[str]:
    """Run the search to ``setup.trials``; return one line per worker that ended with an error."""
    if len(envs) <= 1:
        try:
            run_worker(setup, runtime, 0, on_trial=on_update)
        except DLFError as err:
            return [str(err)]
        return []
    ctx = mp.get_context("spawn")  # CUDA and torch threads do not survive fork
    procs = [ctx.Process(target=_worker_entry, args=(setup, runtime, i, env)) for i, env in enumerate(envs)]
    for p in procs:
        p.start()
    storage = open_storage(setup.storage)
    study = load_tune_study(setup, storage)
    while any(p.is_alive() for p in procs):
        time.sleep(1.0)
        on_update(study)
    on_update(study)
    return [f"worker {i} exited with code {p.exitcode}" for i, p in enumerate(procs) if p.exitcode]


def _worker_entry(setup: TuneSetup, runtime: Any, worker: int, env: dict[str, str]) -> None:
    from dlf.tune.worker import worker_main

    worker_main(setup, runtime, worker, env)


def reap_before_start(setup: TuneSetup) -> int:
    """Fail (and re-enqueue) trials left RUNNING by dead processes; close their MLflow runs."""
    from dlf.tune.track import TrialTracker

    storage = open_storage(setup.storage)
    study = load_tune_study(setup, storage)
    reaped = reap_stale(study, storage)
    if reaped:
        tracker = TrialTracker(setup)
        for frozen in reaped:
            tracker.end_stale(frozen)
    return len(reaped)

