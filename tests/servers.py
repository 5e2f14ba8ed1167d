"""Real PostgreSQL and MLflow tracking servers on loopback, in temp dirs, for the cluster tests.

Both are started as child processes of the test session and stopped when it ends (also on
interpreter exit if a test run is interrupted). ``pg_binaries()`` and ``mlflow_available()`` tell
whether they can be started at all, so that tests skip with a clear reason otherwise.

PostgreSQL's ``initdb``/``postgres`` refuse to run as root: as root the server runs as the
``postgres`` user (created by the Debian package) through ``runuser``, in a ``/tmp`` folder
that user owns; the unix socket goes in that folder, TCP listens on 127.0.0.1 only.
"""
from __future__ import annotations

import atexit
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pg_binaries() -> Path | None:
    """The folder holding initdb/pg_ctl/postgres: $DLF_PG_BIN, Debian's layout, or PATH."""
    candidates = [os.environ.get("DLF_PG_BIN", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    initdb = shutil.which("initdb")
    candidates.append(str(Path(initdb).resolve().parent) if initdb else "")
    for folder in candidates:
        if folder and all((Path(folder) / exe).is_file() for exe in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    return None


def _version_key(folder: str) -> float:
    try:
        return float(Path(folder).parent.name)
    except ValueError:
        return 0.0


def pg_missing_reason() -> str | None:
    """Why a PostgreSQL server cannot be started here (None when it can)."""
    if pg_binaries() is None:
        return ("PostgreSQL server binaries not found (apt-get install -y postgresql, "
                "or set DLF_PG_BIN to the folder holding initdb and pg_ctl)")
    if os.geteuid() == 0 and _postgres_uid() is None:
        return "running as root and there is no 'postgres' user to run the PostgreSQL server as"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed (pip install 'dlf-ablate[cluster]')"
    return None


def _postgres_uid() -> int | None:
    import pwd

    try:
        return pwd.getpwnam("postgres").pw_uid
    except KeyError:
        return None


class PostgresServer:
    """A throwaway PostgreSQL cluster; ``url(db)`` gives a connection URL, ``create_db`` a fresh db."""

    user = "dlf"

    def __init__(self) -> None:
        self.bin = pg_binaries()
        self._as_postgres = os.geteuid() == 0
        # As root the server runs as 'postgres', which must reach its folder: /tmp, not a $TMPDIR
        # that may sit inside a root-only directory. Short paths also keep the socket name legal.
        self.dir = Path(tempfile.mkdtemp(prefix="dlf-pg-", dir="/tmp" if self._as_postgres else None))
        self.port = free_port()
        if self._as_postgres:
            os.chown(self.dir, _postgres_uid(), -1)
        self._started = False

    def _run(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60, **kwargs)

    def start(self) -> "PostgresServer":
        data = self.dir / "data"
        # trust auth on loopback, no fsync: a disposable test cluster, started in about a second.
        self._run("initdb", "-D", str(data), "-A", "trust", "-U", self.user, "-E", "UTF8", "--no-sync")
        opts = f"-p {self.port} -h 127.0.0.1 -k {self.dir} -F -c max_connections=200"
        self._run("pg_ctl", "-D", str(data), "-o", opts, "-l", str(self.dir / "server.log"), "-w", "start")
        self._started = True
        atexit.register(self.stop)
        return self

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{db}"

    def create_db(self, name: str) -> str:
        import psycopg2

        conn = psycopg2.connect(self.url())
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return self.url(name)

    def stop(self) -> None:
        if self._started:
            self._started = False
            try:
                self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")
            except (subprocess.SubprocessError, OSError):
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


def mlflow_available() -> bool:
    """Whether ``mlflow server`` can start; found, not imported (that costs seconds at collection)."""
    import importlib.util

    try:
        return importlib.util.find_spec("mlflow.server") is not None
    except ImportError:
        return False


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with a SQLite backend and a proxied artifact folder."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dlf-mlflow-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> "MlflowServer":
        cmd = [sys.executable, "-m", "mlflow", "server",
               "--backend-store-uri", f"sqlite:///{self.dir / 'mlflow.db'}",
               "--artifacts-destination", str(self.dir / "artifacts"),
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        # Own session: the server forks uvicorn and a job runner; stop() signals the whole group.
        # No job runner (an extra process for MLflow's server-side jobs, which the tests never use).
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(self.dir / "server.log", "wb") as log:  # the server keeps its own descriptor
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir, env=env,
                                         start_new_session=True)
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited early: {self.log_tail()}")
            if _healthy(self.url):
                return self
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"mlflow server not healthy after {timeout:.0f}s: {self.log_tail()}")

    def log_tail(self, n: int = 2000) -> str:
        path = self.dir / "server.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            _stop_group(self.proc, grace=2.0)  # a throwaway server: no need for a graceful drain
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group of ``proc`` (started with its own session), SIGKILL after ``grace``."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)
    except ProcessLookupError:
        pass
    try:  # children that outlived the leader
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
