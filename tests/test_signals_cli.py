"""Signals from outside as a user sends them: Ctrl-C to the whole process group of `run --workers 2`
while its workers start, and SIGTERM to `dlf-ablate ui` alone. No traceback from any process, the
documented exit code, nothing left RUNNING in the store and no process left behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from servers import free_port
from study_fixtures import cli_env, seed_runs, write_study

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table in /proc")
ENTRY = "import sys; from dlf.cli import main; sys.argv[0] = 'dlf-ablate'; main()"


def _processes() -> dict[int, tuple[int, str, bytes, int]]:
    """pid -> (parent pid, state, command line, process group) of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        out[int(entry)] = (int(stat[1]), stat[0], cmdline, int(stat[2]))
    return out


def _descendants(pid: int) -> set[int]:
    table, found, todo = _processes(), set(), [pid]
    while todo:
        parent = todo.pop()
        kids = {p for p, (ppid, *_) in table.items() if ppid == parent}
        found |= kids
        todo += list(kids)
    return found


def _alive(pids: set[int]) -> set[int]:
    table = _processes()
    return {p for p in pids if p in table and table[p][1] != "Z"}  # a zombie is dead, awaiting its reaper


def _wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _group_empty(pgid: int) -> bool:
    return not any(group == pgid and state != "Z" for _, state, _, group in _processes().values())


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.5, 2.0])
def test_ctrl_c_while_workers_start_is_quiet_and_leaves_nothing_running(delay, tmp_path, tiny_mosi):
    """SIGINT to the process group (what a terminal's Ctrl-C does) ``delay`` seconds after the first
    worker process appears: it is still importing torch, or just starting its first run."""
    study = write_study(tmp_path, tiny_mosi, name="startup")
    home = tmp_path / "home"
    proc = subprocess.Popen([sys.executable, "-c", ENTRY, "run", str(study), "--workers", "2", "--threads", "1"],
                            env=cli_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        def a_worker_exists() -> bool:
            assert proc.poll() is None, proc.communicate()
            return any(ppid == proc.pid and b"spawn_main" in cmd for ppid, _, cmd, _ in _processes().values())

        _wait_until(a_worker_exists, 300, "the first worker process")
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "Traceback" not in out + err, err
    assert proc.returncode == 130, (out, err)
    assert "RUNNING" not in {status for _, status, _ in seed_runs(home / "mlflow.db")}
    _wait_until(lambda: _group_empty(proc.pid), 60, "every worker process to exit")


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.mark.slow
def test_sigterm_to_ui_stops_the_mlflow_server_it_started(tmp_path):
    from dlf.run import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.client(uri)  # an existing store: ui refuses to create one
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-c", ENTRY, "ui", "--tracking-uri", uri, "--port", str(port)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    server: set[int] = set()
    try:
        def serving() -> bool:
            assert ui.poll() is None, ui.communicate()
            return _answers(port)

        _wait_until(serving, 300, "the MLflow UI to answer")
        server = _descendants(ui.pid)
        assert server, "the UI runs in a server process of its own"
        ui.send_signal(signal.SIGTERM)  # the ui process alone, as `kill PID` or a supervisor does
        out, err = ui.communicate(timeout=120)
    finally:
        for pid in _alive(server | {ui.pid}):
            os.kill(pid, signal.SIGKILL)
    assert ui.returncode == 128 + signal.SIGTERM and "Traceback" not in out + err, err
    _wait_until(lambda: not _alive(server), 60, f"the server processes {sorted(_alive(server))} to exit")
    assert not _answers(port)
