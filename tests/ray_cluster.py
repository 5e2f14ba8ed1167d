"""A real Ray cluster on this machine for the cluster tests: a head and more node processes.

Each node is ``ray start --block`` in a session of its own, with small ``--num-cpus`` and a temp
folder of the test's; stopping a node kills that session (its raylet and workers), which is what a
node crash looks like to the rest of the cluster. Everything is killed and removed at the end.
Workers import ``dlf`` from this checkout (PYTHONPATH), with one torch thread.
"""
from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from servers import free_port

ROOT = Path(__file__).resolve().parent.parent
RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",  # a private test cluster on loopback (Ray 2.60 turns tokens on by default)
    "RAY_USAGE_STATS_ENABLED": "0",
    # A stopped node is declared dead after ~3 s instead of ~30 s, so its tasks are retried soon.
    "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
    "RAY_health_check_initial_delay_ms": "1000", "OMP_NUM_THREADS": "1",
}


def ray_missing_reason() -> str | None:
    if shutil.which("ray", path=str(Path(sys.executable).parent)) is None:
        return "Ray is not installed (pip install 'dlf-ablate[cluster]')"
    return None


class RayNode:
    def __init__(self, proc: subprocess.Popen, log: Path) -> None:
        self.proc, self.log = proc, log

    def session_pids(self) -> list[int]:
        """Processes of this node (its session): raylet, agents, workers."""
        out = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getsid(int(entry.name)) == self.proc.pid:
                        out.append(int(entry.name))
                except OSError:
                    continue
        return out

    def workers_running(self, title: str) -> list[int]:
        """Worker processes of this node executing a task named ``title`` (Ray sets ``ray::<name>``)."""
        found = []
        for pid in self.session_pids():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if cmd.startswith("ray::") and title in cmd:
                found.append(pid)
        return found

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)


class RayCluster:
    def __init__(self) -> None:
        # Short: Ray's unix sockets live under it and their paths are limited to ~107 characters.
        self.dir = Path(tempfile.mkdtemp(prefix="dlfray-", dir="/tmp"))
        self.env = {**os.environ, **RAY_ENV,
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        self.nodes: list[RayNode] = []
        self.address = ""
        atexit.register(self.stop)

    def _start(self, args: list[str], name: str) -> RayNode:
        log = self.dir / f"{name}.log"
        ray = str(Path(sys.executable).parent / "ray")
        with open(log, "wb") as fh:
            proc = subprocess.Popen([ray, "start", "--block", "--disable-usage-stats", *args], stdout=fh,
                                    stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        node = RayNode(proc, log)
        self.nodes.append(node)
        deadline = time.monotonic() + 180
        while "Ray runtime started" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start ({name}) failed: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.25)
        return node

    def start_head(self, cpus: int) -> RayCluster:
        node = self._start(["--head", "--port", str(free_port()), "--num-cpus", str(cpus), "--temp-dir", str(self.dir),
                            "--include-dashboard=false", "--dashboard-port", str(free_port()),
                            "--ray-client-server-port", str(free_port()), "--object-store-memory", "80000000"], "head")
        found = re.search(r"ray start --address='([^']+)'", node.log.read_text(errors="replace"))
        assert found, node.log.read_text(errors="replace")[-2000:]
        self.address = found.group(1)
        return self

    def add_node(self, cpus: int) -> RayNode:
        return self._start(["--address", self.address, "--num-cpus", str(cpus), "--object-store-memory", "80000000"],
                           f"node{len(self.nodes)}")

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.kill()
        self.nodes = []
        shutil.rmtree(self.dir, ignore_errors=True)
