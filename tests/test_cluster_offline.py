"""The Ray path without a cluster: what `run --ray` and `tune --ray` refuse (Ray missing, nobody at
the address, a GPU fraction no node has, a one-machine store on several nodes), the lease table's
rules, and the retired queue commands. One line, exit 2, nothing written. (A real cluster:
test_ray.py.)"""
from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
from servers import free_port
from study_fixtures import write_study

from dlf.cli import main
from dlf.cluster import claims, ray_run, ray_session, ray_tune
from dlf.cluster.ray_session import ClusterInfo
from dlf.errors import DLFError


@pytest.fixture
def cli(monkeypatch, capsys):
    """``cli(*args)``: the entry point in-process; (exit code, stderr)."""
    monkeypatch.setattr("dlf.cli.defer_gc", lambda: None)  # the collector is the test process's
    monkeypatch.setattr("dlf.cli.freeze_for_exit", lambda: None)

    def run(*args: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["dlf-ablate", *args])
        with pytest.raises(SystemExit) as stop:
            main()
        return stop.value.code, capsys.readouterr().err

    return run


def one_line(err: str) -> str:
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and err.startswith("error: "), err
    return err


@pytest.mark.parametrize("args", [["worker", "--queue", "postgresql://u:pw@db/dlf", "--devices", "0,1"],
                                  ["queue", "status", "--queue", "postgresql://u@db/dlf", "--all"],
                                  ["queue"]])
def test_the_retired_queue_commands_say_how_to_move(cli, args):
    code, err = cli(*args)
    assert code == 2 and "run queue is retired" in one_line(err) and "--ray ADDRESS" in err


def test_run_queue_says_how_to_move_and_writes_nothing(cli, tmp_path, tiny_mosi):
    study = write_study(tmp_path, tiny_mosi, seeds=(1,))
    store = tmp_path / "store.db"
    code, err = cli("run", str(study), "--queue", "postgresql://u@db/dlf", "--tracking-uri", f"sqlite:///{store}")
    assert code == 2 and "run queue is retired" in one_line(err) and not store.exists()


def test_ray_refusals_before_anything_is_written(cli, tmp_path, tiny_mosi, monkeypatch):
    study = write_study(tmp_path, tiny_mosi, seeds=(1,))
    store = tmp_path / "store.db"
    base = ("run", str(study), "--tracking-uri", f"sqlite:///{store}")
    code, err = cli(*base, "--gpus-per-run", "0.5")
    assert code == 2 and "--gpus-per-run needs --ray" in one_line(err)
    code, err = cli(*base, "--ray", "auto", "--devices", "0")
    assert code == 2 and "use --gpus-per-run instead" in one_line(err)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    code, err = cli(*base, "--ray", "local")
    assert code == 2 and "Ray is not installed here; pip install 'dlf-ablate[cluster]'" in one_line(err)
    code, err = cli("tune", str(study), "--ray", "local", "--trials", "1", "--tracking-uri", f"sqlite:///{store}",
                    "--storage", str(tmp_path / "t.journal"))
    assert code == 2 and "Ray is not installed" in one_line(err)
    assert not store.exists() and not (tmp_path / "t.journal").exists()


def test_an_unreachable_address_is_one_line(cli, tmp_path, tiny_mosi):
    pytest.importorskip("ray")
    study = write_study(tmp_path, tiny_mosi, seeds=(1,))
    store = tmp_path / "store.db"
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    code, err = cli("run", str(study), "--ray", address, "--tracking-uri", f"sqlite:///{store}")
    assert code == 2 and f"--ray {address}: nothing answers there" in one_line(err) and not store.exists()
    with pytest.raises(DLFError, match="expected auto, local, HOST:PORT"):
        ray_session.check_reachable("head-without-port")


def test_what_a_cluster_cannot_do_is_refused():
    one = ClusterInfo("head:6379", nodes=1, cpus=4, gpus=0, max_node_gpus=0)
    two = ClusterInfo("head:6379", nodes=2, cpus=8, gpus=2, max_node_gpus=1)
    with pytest.raises(DLFError, match=r"--gpus-per-run 0.25: .* \(it has none\)"):
        ray_session.check_cluster(one, 0.25, {})
    with pytest.raises(DLFError, match="its nodes have at most 1"):
        ray_session.check_cluster(two, 2, {})
    ray_session.check_cluster(two, 0.25, {"--tracking-uri": "http://mlflow:5000", "--storage": "postgresql://db/o"})
    ray_session.check_cluster(one, 0, {"--tracking-uri": "sqlite:///x.db"})  # one node: its own disk is fine
    with pytest.raises(DLFError, match=r"--tracking-uri sqlite:///x.db: a store on one machine's disk.*2 node"):
        ray_session.check_cluster(two, 0, {"--tracking-uri": "sqlite:///x.db"})
    with pytest.raises(DLFError, match="--storage t.journal"):
        ray_session.check_cluster(two, 0, {"--tracking-uri": "http://m:5000", "--storage": "t.journal"})
    for bad in (-1, 1.5):
        with pytest.raises(DLFError, match="a fraction of one GPU"):
            ray_session.check_gpus_per_run(bad)
    assert ray_session.check_gpus_per_run(None) == 0 and ray_session.check_gpus_per_run(2) == 2


def test_a_lease_is_held_by_one_token_until_it_lapses_or_is_released():
    now = [0.0]
    table = claims.ClaimTable(clock=lambda: now[0])
    assert table.hold("k", "task-a", ttl=5) and table.holder("k") == "task-a"
    assert not table.hold("k", "task-b", ttl=5)  # another driver's task: busy
    assert table.hold("k", "task-a", ttl=5)  # the same task (a retry after its worker died) takes it over
    now[0] = 4.0
    assert table.hold("k", "task-a", ttl=5)  # renewed until 9
    now[0] = 8.0
    assert not table.hold("k", "task-b", ttl=5)
    now[0] = 9.5  # not renewed: lapsed (its driver was killed)
    assert table.holder("k") is None and table.hold("k", "task-b", ttl=5)
    assert not table.release("k", "task-a") and table.release("k", "task-b") and table.hold("k", "task-c", ttl=5)


def test_lease_time_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("DLF_RAY_CLAIM_TTL", "4")
    assert claims.claim_ttl() == 4.0
    monkeypatch.setenv("DLF_RAY_CLAIM_TTL", "soon")
    assert claims.claim_ttl() == claims.DEFAULT_TTL
    monkeypatch.setenv("DLF_CODE_VERSION", "pinned")
    assert ray_session.forwarded_env()["DLF_CODE_VERSION"] == "pinned"


def test_task_shape_follows_the_thread_budget():
    assert ray_run.task_shape(8, None, None, 0).cpus == 1  # default: one thread a run, as many runs as fit
    assert ray_run.task_shape(8, 2, None, 0).cpus == 4  # --workers 2: the cluster's CPUs split
    shape = ray_run.task_shape(8, 2, 3, 0.25)
    assert shape.options()["num_cpus"] == 3 and shape.options()["num_gpus"] == 0.25
    assert shape.runtime == {"device": "cuda", "threads": 3, "progress": False}
    assert shape.describe() == "3 CPU(s) and 0.25 GPU per run"
    box = ray_run.EventBox()
    box.put({"type": "start", "key": "k"})
    assert box.drain() == [{"type": "start", "key": "k"}] and box.drain() == []
    info = ClusterInfo("a:1", 2, 3, 0, 0)
    assert ray_tune.RaySearch(info, shape, 2).describe().endswith("2 tune worker(s), 3 CPU(s) and 0.25 GPU per run")


def test_a_node_with_other_code_refuses_the_run(tmp_path, tiny_mosi, monkeypatch):
    from dlf.study.spec import expand, load_study

    monkeypatch.setenv("DLF_CODE_VERSION", "driver-code")
    spec = expand(load_study(str(write_study(tmp_path, tiny_mosi, seeds=(1,), variants=("full",)))))[0]
    assert ray_run.for_this_host(spec) is spec
    assert ray_run.lease_name(spec).endswith(spec.key)
    monkeypatch.setenv("DLF_CODE_VERSION", "node-code")
    with pytest.raises(DLFError, match="this node runs code node-code, the study was planned with driver-code"):
        ray_run.for_this_host(spec)
    setup = SimpleNamespace(data_path=str(tiny_mosi))
    assert ray_tune.on_this_node(setup) is setup


def test_ray_driver_messages_go_to_a_logger(caplog):
    worker = SimpleNamespace(print_to_stdstream=print)
    fake = SimpleNamespace(_private=SimpleNamespace(worker=worker))
    ray_session._route_driver_messages(fake)
    with caplog.at_level("INFO", logger="dlf.ray"):
        worker.print_to_stdstream({"lines": ["A worker died"], "pid": "raylet"}, ignore_prefix=False)
    assert "A worker died" in caplog.text


def test_postgres_urls_for_the_tune_storage():
    from dlf.tune.postgres import connect, redact, sqlalchemy_url

    assert redact("postgresql://me:secret@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert sqlalchemy_url("sqlite:///x.db") == "sqlite:///x.db"
    assert sqlalchemy_url("postgresql://db/x").startswith("postgresql")
    pytest.importorskip("psycopg2")
    with pytest.raises(DLFError, match=r"--storage postgresql://me:\*\*\*@127.0.0.1:\d+/x: cannot connect"):
        connect(f"postgresql://me:secret@127.0.0.1:{free_port()}/x", timeout=2)
