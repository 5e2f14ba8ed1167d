"""MLflow layout of a tuning study, on top of ``dlf.run.tracking`` (URI, client, experiment, env tags).

Experiment ``<study> [tune]`` (kept apart from the study's own experiment so that ``report`` never
mixes trials into ablation tables). One parent run per Optuna study (run name = the Optuna study
name, tags ``dlf.kind=tune``, ``dlf.level=tune``); a child run per trial (``trial-<n>``,
``dlf.level=trial``: params = sampled values, per-epoch metrics, final ``val_*`` of the selected
epoch, ``dlf.trial_state`` COMPLETE/PRUNED/FAIL and MLflow status FINISHED/KILLED/FAILED) and per
re-evaluation (``trial-<n>#<seed>``, ``dlf.level=reeval``). Only validation metrics are logged.
"""
from __future__ import annotations

import functools
import time
from typing import Any, Mapping

from dlf.run import tracking
from dlf.run.mlflow_view import log_dataset_input
from dlf.run.tracking import EpochLogger, end_run, ensure_experiment, environment, search_all

MLFLOW_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
TUNE, TRIAL, REEVAL = "tune", "trial", "reeval"


@functools.lru_cache(maxsize=4)
def client(uri: str) -> Any:
    """One MlflowClient per store and process (opening a SQLite store costs seconds)."""
    return tracking.client(uri)


def experiment_name(study: str) -> str:
    return f"{study} [tune]"


def tune_tags(common: Mapping[str, str], device: str, threads: int | None) -> dict[str, str]:
    """Tags shared by the parent and every trial: study/variant/dataset, kind, environment."""
    env = environment(device, threads)
    return {**common, "dlf.kind": TUNE, **{f"dlf.env.{k}": env[k] for k in ("torch", "cuda", "device", "python", "host")}}


def open_parent(uri: str, setup: Any, extra_tags: Mapping[str, str]) -> tuple[str, str]:
    """(experiment id, parent run id): the Optuna study's parent run, reopened when resuming."""
    c = client(uri)
    exp = ensure_experiment(c, experiment_name(setup.study), uri)
    found = search_all(c, exp, f"tags.`dlf.level` = '{TUNE}' and tags.`dlf.tune_study` = '{setup.study_name}'")
    if found:
        run_id = found[0].info.run_id
        c.update_run(run_id, status="RUNNING")
    else:
        tags = {**setup.tags, **extra_tags, "dlf.level": TUNE, "dlf.tune_study": setup.study_name}
        run_id = c.create_run(exp, tags=tags, run_name=setup.study_name).info.run_id
    return exp, run_id


def close_parent(uri: str, run_id: str, summary: Mapping[str, float], artifacts: list, ok: bool) -> None:
    from mlflow.entities import Metric

    c = client(uri)
    now = int(time.time() * 1000)
    c.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in summary.items()])
    for path in artifacts:
        c.log_artifact(run_id, str(path))
    c.set_terminated(run_id, "FINISHED" if ok else "FAILED")


class TrialTracker:
    """Child runs of the tuning parent, one per trial or re-evaluation (used inside workers)."""

    def __init__(self, setup: Any, dataset: Any = None) -> None:
        self.setup, self.dataset = setup, dataset  # dataset: the loaded data, logged as each run's input
        self.c = client(setup.tracking_uri)
        self._epochs: dict[str, EpochLogger] = {}

    def start(self, number: int, overrides: Mapping[str, Any], seed: int | None = None) -> str:
        from mlflow.entities import Param

        s = self.setup
        level = TRIAL if seed is None else REEVAL
        tags = {**s.tags, "dlf.level": level, "mlflow.parentRunId": s.parent_run_id, "dlf.tune_study": s.study_name,
                "dlf.trial": str(number), "dlf.seed": str(seed if seed is not None else s.base.seed)}
        name = f"trial-{number}" if seed is None else f"trial-{number}#{seed}"
        run_id = self.c.create_run(s.experiment_id, tags=tags, run_name=name).info.run_id
        self.c.log_batch(run_id, params=[Param(k, str(v)) for k, v in overrides.items()])
        if self.dataset is not None:
            log_dataset_input(self.c, [run_id, s.parent_run_id], s.dataset, s.base.data, self.dataset)
        self._epochs[run_id] = EpochLogger(self.c, run_id, flush_seconds=5.0)
        return run_id

    def log_epoch(self, run_id: str, epoch: int, metrics: Mapping[str, float]) -> None:
        self._epochs[run_id](epoch, metrics)

    def log_final(self, run_id: str, val: Mapping[str, float], best_epoch: int, epochs: int, seconds: float) -> None:
        from mlflow.entities import Metric

        # Logged last at step = epochs, so that each name's latest value is the selected epoch's
        # (the seed-run convention in docs/contracts.md).
        self._epochs[run_id].flush()
        now = int(time.time() * 1000) + 1
        final = {**val, "best_epoch": best_epoch, "epochs": epochs, "train_seconds": seconds}
        self.c.log_batch(run_id, metrics=[Metric(k, float(v), now, epochs) for k, v in final.items()])

    def end(self, run_id: str, state: str, error: str | None = None) -> None:
        """Flush the epoch buffer and close the run with the MLflow status of the Optuna state."""
        logger = self._epochs.pop(run_id, None)
        if logger is not None:
            logger.flush()
        self.c.set_tag(run_id, "dlf.trial_state", state)
        if error:
            end_run(self.c, run_id, MLFLOW_STATUS[state], error)
        else:
            self.c.set_terminated(run_id, MLFLOW_STATUS[state])

    def end_stale(self, trial: Any) -> None:
        """Close the MLflow run of a trial whose process died (its Optuna trial was just failed)."""
        run_id = trial.user_attrs.get("dlf.mlflow_run_id")
        if run_id:
            self.c.set_tag(run_id, "dlf.trial_state", "FAIL")
            end_run(self.c, run_id, "FAILED", "its worker process died; the trial was failed and re-enqueued")
