"""The cluster commands without a cluster: what `worker`, `queue status` and `run --queue` say about
a bad queue URL, an unreachable database or tracking server, or a GPU that is not there. One line,
exit 2, no password shown. (Real PostgreSQL and MLflow servers: test_queue.py, test_cluster.py.)"""
from __future__ import annotations

import sys

import pytest
from servers import free_port
from study_fixtures import write_study

from dlf.cli import main


@pytest.fixture
def cli(monkeypatch, capsys):
    """``cli(*args)``: the entry point in-process; (exit code, stderr)."""
    monkeypatch.setattr("dlf.cli.defer_gc", lambda: None)  # the collector is the test process's
    monkeypatch.setattr("dlf.cli.freeze_for_exit", lambda: None)
    monkeypatch.delenv("DLF_QUEUE", raising=False)

    def run(*args: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["dlf-ablate", *args])
        with pytest.raises(SystemExit) as stop:
            main()
        return stop.value.code, capsys.readouterr().err

    return run


def one_line(err: str) -> str:
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_a_queue_url_that_is_not_postgresql_is_refused_without_its_password(cli):
    for args in (["worker", "--queue", "mysql://me:secret@db/dlf"],
                 ["queue", "status", "--queue", "mysql://me:secret@db/dlf"]):
        code, err = cli(*args)
        assert code == 2 and one_line(err).startswith("error: --queue mysql://me:***@db/dlf: not a PostgreSQL URL")
        assert "secret" not in err


def test_an_unreachable_database_is_one_line(cli):
    pytest.importorskip("psycopg2")
    url = f"postgresql://me:secret@127.0.0.1:{free_port()}/dlf"  # nothing listens there
    code, err = cli("queue", "status", "--queue", url)
    assert code == 2 and "cannot connect" in one_line(err) and "check the URL and that PostgreSQL runs" in err
    assert "secret" not in err and "me:***@127.0.0.1" in err


def test_enqueueing_needs_a_reachable_tracking_server(cli, tmp_path, tiny_mosi):
    study = write_study(tmp_path, tiny_mosi, seeds=(1,))
    server = f"http://127.0.0.1:{free_port()}"
    code, err = cli("run", str(study), "--queue", "postgresql://u@127.0.0.1/dlf", "--tracking-uri", server)
    assert code == 2 and one_line(err).startswith(f"error: tracking server {server} unreachable")
    assert "start it or fix --tracking-uri" in err


def test_worker_devices_count_within_the_visible_gpus(cli, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")  # as Slurm sets it: one GPU, index 0 here
    code, err = cli("worker", "--queue", "postgresql://u@127.0.0.1/dlf", "--devices", "1")
    assert code == 2 and "--devices 1: only 1 GPUs are visible (CUDA_VISIBLE_DEVICES=5)" in one_line(err)
