"""``dlf-ablate tune ... --ray ADDRESS --workers N``: the Optuna workers as Ray tasks.

Each task runs :func:`dlf.tune.worker.run_worker`, the loop a local worker process runs, on the
shared Optuna storage (a PostgreSQL URL across nodes; a journal file or SQLite only on a
single-node cluster). The storage's own rules handle dead workers: a task retried after its
worker died finds its old trial stale, fails it and re-enqueues its parameters. Pruning, the
top-up to ``--trials``, the top-k re-evaluation (in the driver) and the export are unchanged.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from dlf.errors import DLFError


class RaySearch:
    """Connected to a cluster whose shape suits the search (:meth:`connect`); :meth:`run` searches."""

    def __init__(self, info: Any, shape: Any, workers: int) -> None:
        self.info, self.shape, self.workers = info, shape, workers

    @classmethod
    def connect(cls, address: str, storage: str, tracking_uri: str, workers: int, threads: int | None,
                gpus_per_run: float | None) -> RaySearch:
        from dlf.cluster import ray_session
        from dlf.cluster.ray_run import task_shape

        gpus = ray_session.check_gpus_per_run(gpus_per_run)
        info = ray_session.connect(address, ray_session.forwarded_env())
        try:
            ray_session.check_cluster(info, gpus, {"--tracking-uri": tracking_uri, "--storage": storage})
        except DLFError:
            ray_session.disconnect()
            raise
        return cls(info, task_shape(info.cpus, workers, threads, gpus), workers)

    def describe(self) -> str:
        return f"{self.info.describe()}; {self.workers} tune worker(s), {self.shape.describe()}"

    def run(self, setup: Any, on_update: Callable[[Any], None]) -> list[str]:
        """Run the search to ``setup.trials``; one line per worker that ended with an error."""
        import ray

        from dlf.tune.storage import open_storage
        from dlf.tune.worker import load_tune_study

        task = ray.remote(tune_on_node).options(name="dlf-tune", **self.shape.options())
        refs = {task.remote(setup, self.shape.runtime, i): i for i in range(self.workers)}
        study = load_tune_study(setup, open_storage(setup.storage))
        errors, waiting = [], list(refs)
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1, timeout=1.0)
            for ref in done:
                errors += _error_of(ray, ref, refs[ref])
            on_update(study)
        return errors

    def close(self) -> None:
        from dlf.cluster.ray_session import disconnect

        disconnect()


def _error_of(ray: Any, ref: Any, worker: int) -> list[str]:
    try:
        error = ray.get(ref)
    except ray.exceptions.RayError as err:  # its worker or node died more often than it is retried
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return [f"worker {worker}: {type(err).__name__}: {first}"[:300]]
    return [error] if error else []


def tune_on_node(setup: Any, runtime_kwargs: dict, worker: int) -> str | None:
    """The Ray task: one tune worker loop on this node; None, or its error line."""
    from dlf.startup import quiet_library_warnings, settle_gc
    from dlf.train.loop import Runtime
    from dlf.tune.worker import run_worker

    quiet_library_warnings()
    settle_gc()
    try:
        run_worker(on_this_node(setup), Runtime(**runtime_kwargs), worker)
    except DLFError as err:
        return f"worker {worker}: {err}"
    return None


def on_this_node(setup: Any) -> Any:
    """``setup`` with this node's copy of the data file when the driver's path is not here."""
    if Path(setup.data_path).is_file():
        return setup
    from dlf.data.mmsa import resolve_dataset

    return dataclasses.replace(setup, data_path=str(resolve_dataset(setup.dataset, setup.base.data).path))
