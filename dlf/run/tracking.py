"""MLflow layout of a study (docs/contracts.md, "Studies and tracking").

Experiment = study name. A parent run per (variant, dataset) named ``<variant>@<dataset>`` and a
child run per seed named ``<variant>@<dataset>#<seed>``. The default store is SQLite under
``dlf.resources.home_dir()`` with artifacts in ``<home>/mlartifacts`` (never the deprecated
``./mlruns`` file store); ``--tracking-uri`` or ``$MLFLOW_TRACKING_URI`` selects any other.
The trainer never sees MLflow: it calls :class:`EpochLogger` through its ``on_epoch`` hook.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import socket
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from dlf.config import flatten
from dlf.errors import DLFError
from dlf.interrupts import HeldCalls
from dlf.resources import home_dir
from dlf.run.mlflow_view import experiment_tags, mark_model_training
from dlf.run.store_file import PARENT, SEED, check_store_file, store_error

_DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The flag, then ``$MLFLOW_TRACKING_URI``, then ``sqlite:///<home>/mlflow.db``."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return f"sqlite:///{home_dir() / 'mlflow.db'}"
    if "://" not in uri:  # a bare path: the deprecated file store, or a typo for a database file
        raise DLFError(f"tracking URI {uri!r} is a plain path; use sqlite:///{Path(uri).resolve()}.db "
                       "or http://host:5000 (the ./mlruns file store is not supported)")
    return uri


def local_state_dir(uri: str) -> Path:
    """Folder for the artifacts and key locks of a store: next to a SQLite file, else the home."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).expanduser().resolve().parent
    return home_dir()


def artifact_location(uri: str, experiment: str) -> str | None:
    """Explicit artifact folder for database stores (MLflow would default to ./mlruns);
    None for a tracking server, which manages its own artifact store."""
    if uri.split(":", 1)[0].split("+", 1)[0] not in _DB_SCHEMES:
        return None
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in experiment)
    return (local_state_dir(uri) / "mlartifacts" / safe).as_uri()


def client(uri: str):
    """An MlflowClient on ``uri`` (creating a SQLite store on first use), with MLflow's chatter off."""
    from mlflow.tracking import MlflowClient

    for name in ("mlflow", "alembic"):  # after the import: mlflow sets its own level on import
        logging.getLogger(name).setLevel(logging.WARNING)
    problem = check_store_file(uri)  # before MLflow, which would add its tables to any SQLite file
    if problem:
        raise DLFError(problem)
    try:
        with _store_lock(uri):  # two processes must not run a new SQLite store's migrations at once
            c = HeldCalls(MlflowClient(tracking_uri=uri))  # no store call is cut in half (dlf.interrupts)
            c.search_experiments(max_results=1)  # fail here, with one line, if the store is unusable
    except DLFError:
        raise
    except Exception as err:  # noqa: BLE001 - any backend error means "cannot use this store"
        raise store_error(uri, err) from None
    return c


def _store_lock(uri: str):
    import contextlib

    if not uri.startswith("sqlite:///"):
        return contextlib.nullcontext()
    from filelock import FileLock

    folder = local_state_dir(uri)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DLFError(f"tracking store {uri}: cannot create {folder} ({err.strerror}); "
                       "check --tracking-uri / MLFLOW_TRACKING_URI") from None
    if not os.access(folder, os.W_OK):  # a read-only copy: no store can be created or migrated there
        return contextlib.nullcontext()
    return FileLock(folder / ".mlflow-store.lock", preserve_lock_file=True, thread_local=False)


def ensure_experiment(c, name: str, uri: str) -> str:
    """The id of experiment ``name``, created (or restored from the trash) when needed, tagged as
    model training so that the MLflow UI opens it on its runs (dlf.run.mlflow_view)."""
    exp = c.get_experiment_by_name(name)
    if exp is None:
        try:
            return c.create_experiment(name, artifact_location=artifact_location(uri, name), tags=experiment_tags())
        except Exception:  # noqa: BLE001 - another process created it first
            exp = c.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        c.restore_experiment(exp.experiment_id)
    mark_model_training(c, exp)  # a store made before the tag existed gets it now
    return exp.experiment_id


def search_all(c, experiment_id: str, filter_string: str) -> list:
    """Every run matching ``filter_string`` (all pages)."""
    out, token = [], None
    while True:
        page = c.search_runs([experiment_id], filter_string=filter_string, max_results=1000, page_token=token)
        out += list(page)
        token = page.token
        if not token:
            return out


def finished_keys(c, experiment_id: str) -> dict[str, Any]:
    """run key -> a FINISHED seed run with that key."""
    runs = search_all(c, experiment_id, f"tags.`dlf.level` = '{SEED}' and attributes.status = 'FINISHED'")
    return {r.data.tags["dlf.run_key"]: r for r in runs if "dlf.run_key" in r.data.tags}


def runs_with_key(c, experiment_id: str, key: str) -> list:
    return search_all(c, experiment_id, f"tags.`dlf.run_key` = '{key}' and tags.`dlf.level` = '{SEED}'")


def common_tags(spec) -> dict[str, str]:
    return {
        "dlf.study": spec.study, "dlf.variant": spec.variant, "dlf.dataset": spec.dataset,
        "dlf.corpus": spec.corpus, "dlf.synthetic": "true" if spec.synthetic else "false",
        "dlf.group": spec.group or "", "dlf.label": spec.label, "dlf.latex": spec.latex,
        "dlf.order": str(spec.order),
    }


def ensure_parents(c, experiment_id: str, specs: Iterable) -> dict[tuple[str, str], tuple[str, str]]:
    """(variant, dataset) -> (parent run id, status), creating missing parents (before workers start)."""
    existing = {}
    for r in search_all(c, experiment_id, f"tags.`dlf.level` = '{PARENT}'"):
        ident = (r.data.tags.get("dlf.variant"), r.data.tags.get("dlf.dataset"))
        existing.setdefault(ident, (r.info.run_id, r.info.status))
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for spec in specs:
        ident = (spec.variant, spec.dataset)
        if ident not in out:
            out[ident] = existing.get(ident) or (_create_parent(c, experiment_id, spec), "RUNNING")
    return out


def _create_parent(c, experiment_id: str, spec) -> str:
    tags = {**common_tags(spec), "dlf.level": PARENT}
    run = c.create_run(experiment_id, tags=tags, run_name=f"{spec.variant}@{spec.dataset}")
    return run.info.run_id


def close_parent(c, run_id: str, statuses: list[str]) -> None:
    """A parent is FINISHED when all its seed runs finished, FAILED when one failed, else left open."""
    if statuses and all(s in ("finished", "cached") for s in statuses):
        c.set_terminated(run_id, "FINISHED")
    elif "failed" in statuses:
        c.set_terminated(run_id, "FAILED")


def environment(device: str | None = None, threads: int | None = None) -> dict[str, str]:
    """Versions and machine facts a result depends on (environment.json and dlf.env.* tags)."""
    from importlib import metadata

    import torch

    import dlf

    name = device or "cpu"
    if name.startswith("cuda") and torch.cuda.is_available():
        name = f"{name} ({torch.cuda.get_device_name(torch.device(name))})"
    packages = {}
    for pkg in ("numpy", "mlflow", "transformers", "optuna"):
        try:
            packages[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            packages[pkg] = "absent"
    return {
        "torch": torch.__version__, "cuda": torch.version.cuda or "none", "device": name,
        "python": platform.python_version(), "platform": platform.platform(), "host": socket.gethostname(),
        "dlf_ablate": dlf.__version__, "cudnn": str(torch.backends.cudnn.version() or "none"),
        "threads": str(threads or torch.get_num_threads()), **packages,
    }


def create_seed_run(c, experiment_id: str, parent_id: str, spec, env: Mapping[str, str]) -> str:
    """The seed run itself, RUNNING, with every contract tag (one database write)."""
    tags = {
        **common_tags(spec), "dlf.level": SEED, "mlflow.parentRunId": parent_id,
        "dlf.seed": str(spec.seed), "dlf.run_key": spec.key, "dlf.code_version": spec.code_version,
        "dlf.data_fingerprint": spec.data_fingerprint, "dlf.data_path": spec.data_path,
        **{f"dlf.env.{k}": env[k] for k in ("torch", "cuda", "device", "python", "host")},
    }
    return c.create_run(experiment_id, tags=tags, run_name=spec.title).info.run_id


def log_run_inputs(c, run_id: str, spec, env: Mapping[str, str]) -> None:
    """Params (the flattened resolved config), config.json and environment.json."""
    from mlflow.entities import Param

    params = [Param(k, _param(v)) for k, v in flatten(spec.config.to_dict()).items()]
    for i in range(0, len(params), 100):  # MLflow accepts at most 100 params per batch
        c.log_batch(run_id, params=params[i:i + 100])
    c.log_dict(run_id, spec.config.to_dict(), "config.json")
    c.log_dict(run_id, dict(env), "environment.json")


def _param(value: Any) -> str:
    return json.dumps(list(value)) if isinstance(value, (list, tuple)) else str(value)


class EpochLogger:
    """``on_epoch`` sink: buffers per-epoch metrics (step = epoch) and writes them with log_batch
    every ``flush_seconds``, so a fast epoch loop does not wait on the database each epoch."""

    def __init__(self, c, run_id: str, flush_seconds: float = 5.0,
                 forward: Callable[[int, dict], None] | None = None) -> None:
        self.c, self.run_id, self.flush_seconds, self.forward = c, run_id, flush_seconds, forward
        self._buffer: list = []
        self._last = time.monotonic()

    def __call__(self, epoch: int, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._buffer += [Metric(k, float(v), now, epoch) for k, v in metrics.items()]
        if time.monotonic() - self._last >= self.flush_seconds:
            self.flush()
        if self.forward is not None:
            self.forward(epoch, dict(metrics))

    def flush(self) -> None:
        for i in range(0, len(self._buffer), 1000):  # MLflow's per-batch metric limit
            self.c.log_batch(self.run_id, metrics=self._buffer[i:i + 1000])
        self._buffer = []
        self._last = time.monotonic()


def finish_seed_run(c, run_id: str, spec, result, dataset) -> None:
    """Final metrics, test predictions and checkpoint; FINISHED is set last, only when all is logged."""
    import numpy as np
    from mlflow.entities import Metric

    from dlf.train.checkpoint import dataset_meta, save_checkpoint, write_predictions

    now = int(time.time() * 1000) + 1  # strictly after every per-epoch value
    final = {f"val_{k}": v for k, v in result.val.items()}
    final.update({f"test_{k}": v for k, v in result.test.items()})
    final.update(best_epoch=result.best_epoch, epochs=result.epochs, train_seconds=result.train_seconds,
                 run_seconds=result.run_seconds)
    # Logged after the epochs at step = epochs: MLflow's "latest value" of val_mae is then the
    # selected epoch's (what reports read), not the last epoch's.
    c.log_batch(run_id, metrics=[Metric(k, float(v), now, int(result.epochs)) for k, v in final.items()])
    c.set_tag(run_id, "dlf.stopped_early", "true" if result.stopped_early else "false")
    with tempfile.TemporaryDirectory(prefix="dlf-run-") as tmp:
        pred = result.test_predictions
        csv_path = write_predictions(Path(tmp) / "test.csv", list(pred["id"]), np.asarray(pred["label"]),
                                     np.asarray(pred["pred"]))
        c.log_artifact(run_id, str(csv_path), "predictions")
        # The study's name for the data (e.g. 'synthetic-mosi'), not the resolved file path.
        meta = {**dataset_meta(dataset), "name": spec.dataset, "synthetic": bool(spec.synthetic)}
        ckpt = save_checkpoint(Path(tmp) / "model.pt", result.state_dict, result.config, dataset.dims,
                               dataset.seq_lens, meta, extra={"run_key": spec.key, "study": spec.study})
        c.log_artifact(run_id, str(ckpt), "checkpoint")
    c.set_terminated(run_id, "FINISHED")


def end_run(c, run_id: str, status: str, reason: str) -> None:
    """Close a seed run as FAILED or KILLED with the one-line reason in ``dlf.error``."""
    c.set_tag(run_id, "dlf.error", reason[:4000])
    c.set_terminated(run_id, status)


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    msg = text[0] if text else ""
    return f"{type(err).__name__}: {msg}" if not isinstance(err, DLFError) else msg


def tracking_problem(uri: str, timeout: float = 10.0) -> str | None:
    """None when the tracking server answers (or ``uri`` is not a server), else why not."""
    if not uri.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None  # it answered (an auth proxy, an old server without /health): reachable
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        return f"tracking server {uri} unreachable ({reason})"
