"""Studies and tune searches on a real two-node Ray cluster started here (issue 21).

The head (2 CPUs) and a second node (1 CPU) are ``ray start`` processes on this machine; runs are
tracked on a real ``mlflow server``, tune shares a real PostgreSQL study. What is killed: a Ray
worker mid-run, the second node mid-study, a driver mid-study. What must hold: every key FINISHED
exactly once, tracked as a local run is. The tests run in file order: the node is stopped last.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from ray_cluster import RAY_ENV, RayCluster, ray_missing_reason
from servers import mlflow_available, pg_missing_reason

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
for _reason in (ray_missing_reason(), pg_missing_reason(),
                None if mlflow_available() else "the mlflow server module is not installed"):
    if _reason:
        pytest.skip(_reason, allow_module_level=True)

TTL = "4"  # seconds before a killed driver's leases lapse
SEED_TAGS = ("dlf.study", "dlf.variant", "dlf.dataset", "dlf.seed", "dlf.run_key", "dlf.code_version",
             "dlf.data_fingerprint", "dlf.env.host", "dlf.level", "mlflow.parentRunId")
ARTIFACTS = {"config.json", "environment.json", "predictions", "checkpoint"}


@pytest.fixture(scope="module")
def cluster():
    c = RayCluster().start_head(cpus=2)
    c.add_node(cpus=1)
    yield c
    c.stop()


def write_study(path: Path, name: str, variants, seeds, epochs: int) -> Path:
    body = {"name": name, "datasets": ["synthetic-mosi"], "variants": list(variants), "seeds": list(seeds),
            "set": {"data.scale": 0.02, "train.max_epochs": epochs, "train.batch_size": 16, "train.accumulation": 1,
                    "model.d_model": 10, "model.n_heads": 2, "loss.ortho_chunk": 10, "model.n_levels": 1,
                    "model.mem_levels": 1}}
    path.write_text(yaml.safe_dump(body))
    return path


def cli(*args: str, home: Path) -> subprocess.Popen:
    env = {**os.environ, **RAY_ENV, "DLF_HOME": str(home), "DLF_CODE_VERSION": "ray-test", "DLF_RAY_CLAIM_TTL": TTL,
           "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-c", "from dlf.cli import main; main()", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def seed_runs(uri: str, study: str) -> list:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(study)
    return [] if exp is None else c.search_runs([exp.experiment_id], "tags.`dlf.level` = 'seed'", max_results=1000)


def wait_for(check, what: str, procs=(), timeout: float = 240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            assert p.poll() is None, f"exited early while waiting for {what}: {p.communicate()[1][-2000:]}"
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def check_once(uri: str, study: str, keys: int) -> list:
    """Every key FINISHED exactly once, nothing left RUNNING; the seed runs."""
    runs = seed_runs(uri, study)
    finished = [r.data.tags["dlf.run_key"] for r in runs if r.info.status == "FINISHED"]
    assert len(finished) == keys and len(set(finished)) == keys, sorted(finished)
    assert {r.info.status for r in runs} <= {"FINISHED", "FAILED", "KILLED"}
    return runs


def one_error_line(res: subprocess.CompletedProcess) -> str:
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-2000:]
    return lines[0]


def test_bad_input_on_a_two_node_cluster_is_one_line_and_writes_nothing(cluster, mlflow_server, tmp_path):
    study = write_study(tmp_path / "s.yaml", "ray-refused", ["full"], [1], epochs=1)
    home = tmp_path / "home"
    sqlite = one_error_line(finish(cli("run", str(study), "--ray", cluster.address, home=home)))
    assert "a store on one machine's disk" in sqlite and "2 node(s)" in sqlite
    gpus = one_error_line(finish(cli("run", str(study), "--ray", cluster.address, "--tracking-uri", mlflow_server.url,
                                     "--gpus-per-run", "0.25", home=home)))
    assert "--gpus-per-run 0.25" in gpus and "it has none" in gpus
    journal = one_error_line(finish(cli("tune", str(study), "--ray", cluster.address, "--trials", "2",
                                        "--tracking-uri", mlflow_server.url, home=home)))
    assert journal.startswith("error: --storage ") and "a store on one machine's disk" in journal
    assert not (home / "mlflow.db").exists() and not (home / "tune").exists()
    from mlflow.tracking import MlflowClient

    assert MlflowClient(mlflow_server.url).get_experiment_by_name("ray-refused") is None


def test_a_killed_driver_loses_nothing_and_two_drivers_never_train_a_key_twice(cluster, mlflow_server, tmp_path,
                                                                               reaper):
    uri, name = mlflow_server.url, "ray-drivers"
    study = write_study(tmp_path / "s.yaml", name, ["full", "wo_lr", "only_l"], [1, 2], epochs=4)
    args = ("run", str(study), "--ray", cluster.address, "--tracking-uri", uri)
    reaper.append(cli(*args, home=tmp_path / "a"))
    wait_for(lambda: {r.info.status for r in seed_runs(uri, name)} >= {"FINISHED", "RUNNING"},
             "a finished and a running run", reaper)
    reaper[0].send_signal(signal.SIGKILL)
    reaper[0].communicate(timeout=30)
    before = sum(r.info.status == "FINISHED" for r in seed_runs(uri, name))
    reaper += [cli(*args, home=tmp_path / "b"), cli(*args, home=tmp_path / "c")]  # two drivers at once
    results = [finish(p) for p in reaper[1:]]
    for res in results:
        assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
        assert "ray cluster" in res.stdout and "Traceback" not in res.stderr + res.stdout
    trained = sum(len(re.findall(r"^done ", res.stdout, re.M)) for res in results)
    assert 1 <= trained <= 6 - before  # only missing keys, each by one driver
    runs = check_once(uri, name, keys=6)
    assert any(r.info.status in ("FAILED", "KILLED") for r in runs)  # the killed driver's run, closed by a claimer
    finished = [r for r in runs if r.info.status == "FINISHED"]
    for r in finished:
        assert set(SEED_TAGS) <= set(r.data.tags) and "test_mae" in r.data.metrics
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    assert ARTIFACTS <= {a.path for a in c.list_artifacts(finished[0].info.run_id)}
    parents = c.search_runs([finished[0].info.experiment_id], "tags.`dlf.level` = 'parent'")
    assert len(parents) == 3 and {p.info.status for p in parents} == {"FINISHED"}


def test_a_study_on_ray_reproduces_the_local_results(cluster, mlflow_server, tmp_path, new_store, monkeypatch):
    from dlf.cluster.ray_run import run_on_ray
    from dlf.run.local import run_study
    from dlf.study.spec import expand, load_study

    monkeypatch.setenv("DLF_CODE_VERSION", "ray-test")
    for k, v in RAY_ENV.items():
        monkeypatch.setenv(k, v)
    specs = expand(load_study(str(write_study(tmp_path / "s.yaml", "ray-same", ["full", "wo_lr"], [3], epochs=2))))
    local = run_study(specs, new_store(tmp_path / "local" / "mlflow.db"), threads=1)
    on_ray = run_on_ray(specs, mlflow_server.url, cluster.address, threads=1)
    assert local.ok and on_ray.ok and on_ray.counts()["finished"] == 2
    from mlflow.tracking import MlflowClient

    for spec in specs:
        a = MlflowClient(f"sqlite:///{tmp_path / 'local' / 'mlflow.db'}").get_run(local.outcomes[spec.key].run_id)
        b = MlflowClient(mlflow_server.url).get_run(on_ray.outcomes[spec.key].run_id)
        assert a.data.tags["dlf.run_key"] == b.data.tags["dlf.run_key"] == spec.key
        for metric in ("test_mae", "test_corr", "val_mae", "test_acc7"):
            assert b.data.metrics[metric] == pytest.approx(a.data.metrics[metric], rel=1e-4, abs=1e-5), metric


def test_tune_with_two_ray_workers_on_postgresql(cluster, mlflow_server, pg, tmp_path):
    import optuna
    from optuna.trial import TrialState

    from dlf.tune.storage import open_storage

    url = pg.create_db("ray_tune")
    study = write_study(tmp_path / "s.yaml", "ray-tune", ["full"], [1], epochs=1)
    res = finish(cli("tune", str(study), "--ray", cluster.address, "--workers", "2", "--trials", "4", "--storage", url,
                     "--study-name", "shared", "--top-k", "1", "--seeds", "1", "--pruner", "none", "--threads", "1",
                     "--tracking-uri", mlflow_server.url, "--no-progress", "--no-plots", "--export",
                     str(tmp_path / "best.yaml"), home=tmp_path / "home"))
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
    assert "2 tune worker(s)" in res.stdout and (tmp_path / "best.yaml").is_file()
    trials = optuna.load_study(study_name="shared", storage=open_storage(url)).trials
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == 4 and TrialState.RUNNING not in states


def test_a_killed_worker_and_a_stopped_node_are_retried_and_each_run_finishes_once(cluster, mlflow_server,
                                                                                    tmp_path, reaper):
    uri, name = mlflow_server.url, "ray-failures"
    # 16 epochs (a few seconds a run): a run seen RUNNING is still training when the signal lands; 10
    # runs: some are still pending for the head once the stopped node's runs are settled
    study = write_study(tmp_path / "s.yaml", name, ["full", "wo_lr", "only_l", "wo_lfa", "wo_hp"], [1, 2], epochs=16)
    reaper.append(cli("run", str(study), "--ray", cluster.address, "--tracking-uri", uri, home=tmp_path / "a"))
    head, node = cluster.nodes

    def statuses() -> list[str]:
        return [r.info.status for r in seed_runs(uri, name)]

    def started(n):  # a run task on ``n``, and every running task has its MLflow run already
        mine = n.workers_running("dlf-run")
        tasks = len(head.workers_running("dlf-run")) + len(node.workers_running("dlf-run"))
        return mine if mine and statuses().count("RUNNING") >= tasks else None

    def running() -> set[str]:
        return {r.info.run_id for r in seed_runs(uri, name) if r.info.status == "RUNNING"}

    # the node first, while the three slots (two on the head, one on the node) are all busy
    wait_for(lambda: started(node), "a run on the second node", reaper)
    then = running()
    node.kill()
    # its run is taken over by a retry (marked FAILED) or was done: from then on RUNNING runs are live
    wait_for(lambda: not then & running(), "the runs of the stopped node's time to end", reaper)
    os.kill(wait_for(lambda: started(head), "a run on the head", reaper)[0], signal.SIGKILL)
    res = finish(reaper[0])
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
    finished, cached, failed = map(int, re.search(r"(\d+) finished, (\d+) cached, (\d+) failed", res.stdout).groups())
    assert finished + cached == 10 and failed == 0 and "Traceback" not in res.stdout + res.stderr
    assert "worker died" not in res.stdout and "View run" not in res.stdout  # no Ray or MLflow chatter
    runs = check_once(uri, name, keys=10)
    abandoned = [r for r in runs if r.info.status == "FAILED"]
    # the killed worker's run was trained again; the stopped node's task was retried on the head: it
    # trained its key again, or found it finished (the node died between the run's end and its reply)
    assert len(abandoned) >= 1 and len(abandoned) + cached >= 2
