"""Workers on a real PostgreSQL queue and a real ``mlflow server``, killed mid-run (issue 8).

Each worker process gets its own DLF_HOME, so the per-run file locks of the local executor do not
cover them: only the queue's claims keep them apart, as on separate hosts.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

try:
    from tests.servers import MlflowServer, PostgresServer, free_port, mlflow_available, pg_missing_reason
except ImportError:  # tests/ is not a package and the repo root is not on sys.path
    from servers import MlflowServer, PostgresServer, free_port, mlflow_available, pg_missing_reason

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
if pg_missing_reason():
    pytest.skip(pg_missing_reason(), allow_module_level=True)
if not mlflow_available():
    pytest.skip("the mlflow server module is not installed", allow_module_level=True)

STALE = 3  # seconds: short, so that the killed worker's run is reclaimed quickly
SEED_TAGS = ("dlf.study", "dlf.variant", "dlf.dataset", "dlf.corpus", "dlf.synthetic", "dlf.group", "dlf.label",
             "dlf.latex", "dlf.order", "dlf.seed", "dlf.run_key", "dlf.code_version", "dlf.data_fingerprint",
             "dlf.env.torch", "dlf.env.cuda", "dlf.env.device", "dlf.env.python", "dlf.env.host",
             "dlf.level", "mlflow.parentRunId")
ARTIFACTS = ("config.json", "environment.json", "predictions/test.csv", "checkpoint/model.pt")


@pytest.fixture(scope="module")
def pg():
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mlflow_server():
    server = MlflowServer().start()
    yield server
    server.stop()


def write_study(path: Path, name: str, variants, seeds, epochs: int = 1) -> Path:
    body = {"name": name, "datasets": ["synthetic-mosi"], "variants": list(variants), "seeds": list(seeds),
            "set": {"data.scale": 0.02, "train.max_epochs": epochs, "train.batch_size": 16, "train.accumulation": 1}}
    path.write_text(yaml.safe_dump(body))
    return path


def cli(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from dlf.cli import main; main()", *args]
    return subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def run_cli(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = cli(*args, env=env)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def start_worker(url: str, home: Path, *extra: str) -> subprocess.Popen:
    # One torch thread each: several workers share the 2 cores of the test machine.
    return cli("worker", "--queue", url, "--threads", "1", "--poll", "0.3", "--stale", str(STALE), *extra,
               env={"DLF_HOME": str(home)})


def rows(url: str) -> dict:
    from dlf.cluster.launch import queue_rows

    return {r.key: r for r in queue_rows(url)}


def seed_runs(uri: str, study: str) -> list:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(study)
    return c.search_runs([exp.experiment_id], "tags.`dlf.level` = 'seed'", max_results=1000)


def running_key_of(url: str, proc: subprocess.Popen, uri: str, study: str, timeout: float = 120) -> str:
    """Wait until worker ``proc`` trains a run (row claimed by it, MLflow run RUNNING); its key."""
    me = f"{socket.gethostname()}:{proc.pid}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"worker exited early: {proc.communicate()[1][-2000:]}"
        mine = [r.key for r in rows(url).values() if r.state == "running" and r.worker == me]
        if mine and any(r.data.tags.get("dlf.run_key") == mine[0] and r.info.status == "RUNNING"
                        for r in seed_runs(uri, study)):
            return mine[0]
        time.sleep(0.1)
    raise AssertionError(f"worker {me} never trained a run within {timeout}s")


def check_queue(final: dict, killed_key: str, killed_pid: int, stopped_key: str, stopped_pid: int) -> None:
    """Every key done exactly once; the killed run reclaimed by another worker; the stopped one
    given back untried (its attempt not counted)."""
    host = socket.gethostname()
    assert len(final) == 6 and all(r.state == "done" for r in final.values())
    r = final[killed_key]
    assert r.attempts >= 2 and r.workers[0] == f"{host}:{killed_pid}" and r.worker != r.workers[0]
    assert r.workers[-1] == r.worker
    assert f"{host}:{stopped_pid}" in final[stopped_key].workers
    assert final[stopped_key].attempts == len(final[stopped_key].workers) - 1


def check_tracking(uri: str, study: str, final: dict, killed_key: str, stopped_key: str, store: Path) -> None:
    """One FINISHED seed run per key on the server, with every contract tag and artifact."""
    from mlflow.tracking import MlflowClient

    runs = seed_runs(uri, study)
    finished = [x for x in runs if x.info.status == "FINISHED"]
    assert sorted(x.data.tags["dlf.run_key"] for x in finished) == sorted(final)
    for x in finished:
        assert set(SEED_TAGS) <= set(x.data.tags), set(SEED_TAGS) - set(x.data.tags)
        assert x.data.tags["dlf.study"] == study and x.info.run_id == final[x.data.tags["dlf.run_key"]].run_id
        assert "test_mae" in x.data.metrics and "val_mae" in x.data.metrics
    by_status = {(x.data.tags["dlf.run_key"], x.info.status) for x in runs}
    assert (killed_key, "FAILED") in by_status  # the dead worker's RUNNING run, marked by the reclaimer
    # The SIGTERM'd worker closes its run KILLED (or, stopped before the run's try block, the
    # next claimer marks it FAILED as abandoned): never FINISHED twice.
    assert by_status & {(stopped_key, "KILLED"), (stopped_key, "FAILED")}
    c = MlflowClient(uri)
    run_id = finished[0].info.run_id
    logged = {f.path for top in c.list_artifacts(run_id)
              for f in ([top] if not top.is_dir else c.list_artifacts(run_id, top.path))}
    assert set(ARTIFACTS) <= logged
    stored = {p.name for p in store.rglob("*") if p.is_file()}
    assert {"model.pt", "test.csv", "config.json"} <= stored  # uploaded to the server's artifact store
    parents = c.search_runs([finished[0].info.experiment_id], "tags.`dlf.level` = 'parent'")
    assert len(parents) == 3 and all(p.info.status == "FINISHED" for p in parents)


@pytest.fixture(autouse=True)
def pinned_code_version(monkeypatch):
    # Workers compare their code version with the enqueued one; pin it so that edits to the
    # checkout while the test runs cannot make them refuse the runs.
    monkeypatch.setenv("DLF_CODE_VERSION", "cluster-test")


@pytest.fixture
def reaper():
    """Processes a test started; any still running at the end (a failed assertion) are killed."""
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_workers_share_a_study_and_recover_from_a_killed_worker(pg, mlflow_server, tmp_path, reaper):
    from dlf.cluster.launch import enqueue_study

    url, uri, study = pg.create_db("cluster"), mlflow_server.url, "cluster-tiny"
    # 8 epochs (~3 s of training): the signals below land while the run seen RUNNING still trains; with
    # one epoch a run could finish between that check and the signal
    path = write_study(tmp_path / "study.yaml", study, ["full", "wo_lr", "only_l"], [1, 2], epochs=8)
    queued = run_cli("run", str(path), "--queue", url, "--tracking-uri", uri)
    assert queued.returncode == 0, queued.stderr
    assert "cluster-tiny: 6 runs; 0 already finished" in queued.stdout and "queued 6 new" in queued.stdout
    assert enqueue_study(str(path), url, tracking_uri=uri).kept == 6  # enqueued once

    reaper += [start_worker(url, tmp_path / f"host{i}") for i in range(3)]
    killed, stopped, survivor = reaper
    killed_key = running_key_of(url, killed, uri, study)
    killed.send_signal(signal.SIGKILL)
    stopped_key = running_key_of(url, stopped, uri, study)
    stopped.send_signal(signal.SIGTERM)
    _, err = stopped.communicate(timeout=60)
    assert stopped.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "stopped by SIGTERM; released" in err
    _, err = survivor.communicate(timeout=150)
    assert survivor.returncode == 0, err[-3000:]
    killed.communicate(timeout=60)  # reaped, and its pipes closed

    final = rows(url)
    check_queue(final, killed_key, killed.pid, stopped_key, stopped.pid)
    check_tracking(uri, study, final, killed_key, stopped_key, mlflow_server.dir / "artifacts")

    status = run_cli("queue", "status", "--queue", url, "--study", study)
    assert status.returncode == 0, status.stderr
    line = next(l for l in status.stdout.splitlines() if study in l)
    assert [c.strip() for c in line.strip("│┃ ").split("│")][1:] == ["0", "0", "6", "0", "6"]


def test_unreachable_database_or_tracking_server_is_one_line_and_leaves_no_claim(pg, mlflow_server, tmp_path):
    from dlf.errors import DLFError
    from dlf.cluster.launch import enqueue_study

    dead_db = f"postgresql://dlf:pw@127.0.0.1:{free_port()}/nothing"
    path = write_study(tmp_path / "study.yaml", "cluster-unreachable", ["full"], [1, 2])
    for args in (("worker", "--queue", dead_db), ("queue", "status", "--queue", dead_db),
                 ("run", str(path), "--queue", dead_db, "--tracking-uri", mlflow_server.url)):
        res = run_cli(*args, timeout=60)
        assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
        assert res.stderr.startswith("error: --queue postgresql://dlf:***@127.0.0.1") and "cannot connect" in res.stderr

    url = pg.create_db("unreachable")
    dead_tracking = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(DLFError, match="unreachable"):
        enqueue_study(str(path), url, tracking_uri=dead_tracking)
    with pytest.raises(DLFError, match="cannot connect"):
        enqueue_study(str(path), dead_db, tracking_uri=mlflow_server.url)
    assert rows(url) == {}  # nothing was queued by either failure

    enqueue_study(str(path), url, tracking_uri=mlflow_server.url)
    res = run_cli("worker", "--queue", url, "--tracking-uri", dead_tracking, "--threads", "1", timeout=90)
    assert res.returncode == 2, res.stderr
    error = [l for l in res.stderr.splitlines() if l.startswith("error:")]
    assert len(error) == 1 and "unreachable" in error[0] and "released" in error[0]
    assert all(r.state == "pending" and r.attempts == 0 and r.worker is None for r in rows(url).values())


# ------------------------------------------------------------------ tune across hosts (dlf.tune)
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
