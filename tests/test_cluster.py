"""Tune processes sharing one Optuna study on a real PostgreSQL, with a real ``mlflow server``
(issue 8); the same search as Ray tasks is in test_ray.py."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

try:
    from tests.servers import mlflow_available, pg_missing_reason
except ImportError:  # tests/ is not a package and the repo root is not on sys.path
    from servers import mlflow_available, pg_missing_reason

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
if pg_missing_reason():
    pytest.skip(pg_missing_reason(), allow_module_level=True)
if not mlflow_available():
    pytest.skip("the mlflow server module is not installed", allow_module_level=True)


def write_study(path: Path, name: str, variants, seeds, epochs: int = 1) -> Path:
    body = {"name": name, "datasets": ["synthetic-mosi"], "variants": list(variants), "seeds": list(seeds),
            "set": {"data.scale": 0.02, "train.max_epochs": epochs, "train.batch_size": 16, "train.accumulation": 1}}
    path.write_text(yaml.safe_dump(body))
    return path


def cli(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from dlf.cli import main; main()", *args]
    return subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_tune_processes_share_one_postgres_study(pg, mlflow_server, tmp_path, reaper):
    import optuna
    from optuna.trial import TrialState

    from dlf.tune.storage import open_storage

    url = pg.create_db("tune")
    path = write_study(tmp_path / "study.yaml", "cluster-tune", ["full"], [1])
    args = ("tune", str(path), "--trials", "4", "--storage", url, "--study-name", "shared", "--top-k", "1",
            "--seeds", "1", "--tracking-uri", mlflow_server.url, "--pruner", "none", "--threads", "1",
            "--no-progress")
    reaper += [cli(*args, env={"DLF_HOME": str(tmp_path / f"host{i}")}) for i in range(2)]
    for proc in reaper:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="shared", storage=open_storage(url))
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 4  # a total, not per process
    assert TrialState.RUNNING not in states


def test_stale_tune_trial_on_postgres_is_failed_and_retried(pg, monkeypatch):
    import optuna
    import sqlalchemy
    from optuna.trial import TrialState

    import dlf.tune.storage as ts

    monkeypatch.setattr(ts, "HEARTBEAT_S", 1)
    monkeypatch.setattr(ts, "GRACE_S", 2)
    storage = ts.open_storage(pg.create_db("stale_trials"))
    study = optuna.create_study(study_name="s", storage=storage)
    dead = study.ask()
    dead.suggest_float("loss.lambda_r", 0.01, 1.0, log=True)
    dead.set_user_attr("dlf.host", "another-host")  # its process is not ours to check: only heartbeats tell
    dead.set_user_attr("dlf.pid", 1)
    storage.record_heartbeat(dead._trial_id)
    assert ts.reap_stale(study, storage) == []  # heartbeat fresh
    with storage.engine.begin() as conn:  # silent for a minute, past GRACE_S, without waiting for it
        conn.execute(sqlalchemy.text("UPDATE trial_heartbeats SET heartbeat = heartbeat - INTERVAL '1 minute' "
                                     "WHERE trial_id = :t"), {"t": dead._trial_id})
    ts.reap_stale(study, storage)
    trials = study.get_trials(deepcopy=False)
    assert trials[0].state == TrialState.FAIL
    assert [t.state for t in trials[1:]] == [TrialState.WAITING]  # retried with the same parameters
    assert trials[1].params == trials[0].params
