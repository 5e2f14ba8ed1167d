"""Optuna storage for ``dlf-ablate tune``: journal files on one machine, RDB URLs for a cluster.

Dead-worker rules (documented in the README):

* RDB (``sqlite:///``, ``postgresql://``...): every trial records an Optuna heartbeat every
  ``HEARTBEAT_S`` seconds; a RUNNING trial silent for ``GRACE_S`` seconds is failed by the next
  worker that starts a trial, and :class:`RetryHeartbeatStaleTrialCallback` re-enqueues its parameters.
* Journal files have no heartbeat, so each trial records its owner (host, pid, process start
  time) as user attributes. A RUNNING trial is stale when its owner is on this host and that
  process is gone (or a zombie, or a different process now holds the pid), or when it has no owner
  60 s after it started (its process died between ``ask`` and recording the owner). Stale trials
  are failed and their parameters re-enqueued, on both storage kinds. Trials owned by another host
  are never judged from here: use an RDB storage for several machines.
"""
from __future__ import annotations

import contextlib
import copy
import datetime as dt
import os
import re
import socket
import threading
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from dlf.errors import DLFError
from dlf.tune.postgres import sqlalchemy_url
from dlf.resources import home_dir
from dlf.tune.journal import check_journal

HEARTBEAT_S = 30
GRACE_S = 120
MAX_RETRY = 3
ORPHAN_S = 60
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
OWNER_KEYS = ("dlf.host", "dlf.pid", "dlf.pid_start")
# Attributes of one attempt: a retried trial starts without them.
ATTEMPT_KEYS = OWNER_KEYS + ("dlf.mlflow_run_id", "dlf.epochs", "dlf.error")


def is_rdb(storage: str) -> bool:
    return "://" in storage


def default_storage(study_name: str) -> str:
    """``<DLF_HOME>/tune/<study-name>.journal`` (DLF_HOME defaults to ./.dlf)."""
    return str(home_dir() / "tune" / f"{safe_name(study_name)}.journal")


def safe_name(name: str) -> str:
    """A study name usable as a file name on every OS."""
    return re.sub(r"[^A-Za-z0-9._@+-]", "_", name)


def check_storage(storage: str) -> None:
    """Refuse a journal path that is a folder, not a journal, or damaged (the file is only read)."""
    if is_rdb(storage):
        return
    path = Path(storage).expanduser()
    if path.is_dir():
        raise DLFError(f"--storage {storage}: is a folder; give a journal file path such as {path / 'tune.journal'}")
    check_journal(path)


def open_storage(storage: str) -> optuna.storages.BaseStorage:
    """A journal file path or an RDB URL -> Optuna storage (parent folders created for files)."""
    if not is_rdb(storage):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        check_storage(storage)
        path = Path(storage).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return JournalStorage(JournalFileBackend(str(path)))
        except Exception as err:  # noqa: BLE001 - well-formed records Optuna still cannot replay
            raise DLFError(f"tune journal {path}: Optuna cannot replay it ({type(err).__name__}: {err}); it was "
                           "left untouched: restore it from a backup, or point --storage at a fresh file") from None
    if storage.startswith("sqlite:///"):
        Path(storage[len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)
    try:
        # Several hosts opening a fresh PostgreSQL study at once race on Optuna's schema creation.
        with _pg_lock(storage, "dlf-optuna-schema"), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                sqlalchemy_url(storage), heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                heartbeat_stale_trial_callback=_retry())
    except DLFError:
        raise
    except Exception as err:  # sqlalchemy/driver errors: report one line, not a traceback
        raise DLFError(f"--storage {storage}: cannot open ({type(err).__name__}: {str(err).splitlines()[0]})") from None


def claim_lock(storage: str) -> contextlib.AbstractContextManager:
    """Serialises 'count finished trials, then ask' between local workers of a journal storage.

    Released by the kernel when its holder dies (fcntl), unlike a symlink lock. On PostgreSQL a
    session advisory lock plays that part across hosts; other RDB storages have no such lock, and
    there the total can overshoot by at most (workers - 1) trials.
    """
    if is_rdb(storage):
        return _pg_lock(storage, "dlf-tune-claim")
    from filelock import FileLock

    return FileLock(str(Path(storage).expanduser()) + ".claim.lock")


def _pg_lock(storage: str, name: str) -> contextlib.AbstractContextManager:
    """A cross-host advisory lock on PostgreSQL storages; nothing elsewhere."""
    if not storage.startswith("postgres"):
        return contextlib.nullcontext()
    from dlf.tune.postgres import advisory_lock

    return advisory_lock(storage, name)


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def count_claimed(study: optuna.Study) -> int:
    """Finished trials plus those running now: what a new trial would come on top of."""
    return len(study.get_trials(deepcopy=False, states=FINISHED + (TrialState.RUNNING,)))


# ---------------------------------------------------------------- trial ownership
def _process_start(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may contain spaces
    return f"{fields[0]}:{fields[19]}"  # state:starttime


def owner_attrs() -> dict[str, Any]:
    start = _process_start(os.getpid())
    return {"dlf.host": socket.gethostname(), "dlf.pid": os.getpid(),
            "dlf.pid_start": start.split(":")[1] if start else None}


def mark_owner(trial: optuna.Trial) -> None:
    for key, value in owner_attrs().items():
        trial.set_user_attr(key, value)


def _owner_alive(attrs: dict[str, Any]) -> bool:
    pid = attrs["dlf.pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    start = _process_start(pid)
    if start is None:  # no /proc (macOS): the pid exists, trust it
        return True
    state, ticks = start.split(":")
    return state != "Z" and (attrs.get("dlf.pid_start") in (None, ticks))


def is_stale(trial: optuna.trial.FrozenTrial, host: str, now: dt.datetime) -> bool:
    attrs = trial.user_attrs
    if "dlf.pid" not in attrs:
        started = trial.datetime_start or now
        return (now - started).total_seconds() > ORPHAN_S
    return attrs.get("dlf.host") == host and not _owner_alive(attrs)


def reap_stale(study: optuna.Study, storage: optuna.storages.BaseStorage) -> list[optuna.trial.FrozenTrial]:
    """Fail RUNNING trials of dead processes and re-enqueue their parameters; return the failed trials."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # RDB heartbeats; a no-op for journal storages
    retry = _retry()
    host, now = socket.gethostname(), dt.datetime.now()
    reaped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_stale(trial, host, now):
            continue
        try:
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        failed = storage.get_trial(trial._trial_id)
        reaped.append(failed)
        retry(study, failed)
    return reaped


def retry_trial(study: optuna.Study, storage: optuna.storages.BaseStorage, trial: optuna.Trial) -> None:
    """Re-enqueue the parameters of a trial that was failed by an interruption."""
    _retry()(study, storage.get_trial(trial._trial_id))


def _retry() -> "Retry":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return Retry(max_retry=MAX_RETRY)


class Retry(RetryHeartbeatStaleTrialCallback):
    """Re-enqueue a dead trial's parameters without its attempt attributes: a retry that kept the
    dead owner's pid would look stale again the moment a worker pops it."""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        clean = copy.deepcopy(trial)
        clean.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in ATTEMPT_KEYS}
        super().__call__(study, clean)


class Heartbeat:
    """Records an RDB heartbeat for one trial from a thread (Optuna only does so inside optimize())."""

    def __init__(self, storage: optuna.storages.BaseStorage, trial: optuna.Trial) -> None:
        interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
        self._beat = (lambda: storage.record_heartbeat(trial._trial_id)) if interval else None
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Heartbeat":
        if self._beat is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            self._beat()
            if self._stop.wait(self._interval):
                return

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

