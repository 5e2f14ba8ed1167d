"""Connecting a driver (``run --ray``, ``tune --ray``) to a Ray cluster, and what it must refuse.

Every refusal is one line before anything is written: Ray not installed, an address nobody
answers at, a GPU fraction no node can give, a store on one machine's disk with several nodes.
Ray's own logging stays out of the terminal: its logger is set to errors only, worker output is
not forwarded (it stays in the cluster's log files) and the messages Ray pushes to drivers about
dead workers (the retries say what happened) go to a Python logger instead of stdout.
"""
from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

from dlf.errors import DLFError

LOCAL, AUTO = "local", "auto"
SHARED_SCHEMES = ("http://", "https://", "postgresql", "postgres://", "mysql", "mssql")
log = logging.getLogger("dlf.ray")


@dataclass(frozen=True)
class ClusterInfo:
    address: str
    nodes: int
    cpus: float
    gpus: float
    max_node_gpus: float  # the most GPUs one node has: a task's fraction must fit one node

    def describe(self) -> str:
        return (f"ray cluster {self.address}: {self.nodes} node(s), {self.cpus:g} CPUs, {self.gpus:g} GPUs")


def check_gpus_per_run(gpus: float | None) -> float:
    """0 (CPU runs) or a fraction in (0, 1] or a whole number of GPUs per run."""
    if gpus is None or gpus == 0:
        return 0.0
    if gpus < 0 or (gpus > 1 and gpus != int(gpus)):
        raise DLFError(f"--gpus-per-run {gpus:g}: give a fraction of one GPU such as 0.25 (four runs per GPU), "
                       "or a whole number of GPUs")
    return float(gpus)


def check_cluster(info: ClusterInfo, gpus_per_run: float, stores: dict[str, str]) -> None:
    """Refuse what this cluster cannot do: the GPU fraction, and stores on one machine's disk.

    ``stores`` maps an option (``--tracking-uri``, ``--storage``) to its value.
    """
    if gpus_per_run and info.max_node_gpus < gpus_per_run:
        have = f"its nodes have at most {info.max_node_gpus:g}" if info.gpus else "it has none"
        raise DLFError(f"--gpus-per-run {gpus_per_run:g}: the {info.describe()} cannot give a run that many GPUs "
                       f"({have}); use --gpus-per-run 0 for CPU runs or connect to a cluster with GPUs")
    if info.nodes <= 1:
        return
    for option, value in stores.items():
        if not value.startswith(SHARED_SCHEMES):
            raise DLFError(f"{option} {value}: a store on one machine's disk, and the {info.describe()}; runs on the "
                           "other nodes cannot reach it: use an MLflow server (--tracking-uri http://host:5000) "
                           "and a PostgreSQL URL for tune's --storage (docs/cluster.md)")


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise DLFError("--ray: Ray is not installed here; pip install 'dlf-ablate[cluster]'") from None
    return ray


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """A ``host:port`` or ``ray://host:port`` address must accept a TCP connection (Ray itself would
    retry for a minute, printing a warning a second)."""
    if address in (LOCAL, AUTO):
        return
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise DLFError(f"--ray {address}: expected auto, local, HOST:PORT (the head's GCS port, 6379 by default) "
                       "or ray://HOST:10001")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise DLFError(f"--ray {address}: nothing answers there ({err.strerror or err}); start the cluster "
                       "(ray start --head) or fix the address") from None


def connect(address: str, env: dict[str, str] | None = None) -> ClusterInfo:
    """ray.init for ``address`` (auto, local, HOST:PORT, ray://HOST:PORT), quietly; the cluster's size.

    ``env``: variables every task of this driver sees (Ray's runtime environment).
    """
    ray = import_ray()
    check_reachable(address)
    if ray.is_initialized():  # a second command in one process (tests, notebooks)
        ray.shutdown()
    _route_driver_messages(ray)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # no "View run at" per parent
    kwargs: dict[str, Any] = dict(logging_level=logging.ERROR, log_to_driver=False,
                                  runtime_env={"env_vars": dict(env or {})})
    if address == LOCAL:
        kwargs.update(include_dashboard=False, num_cpus=_local_cpus())
    else:
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except Exception as err:  # noqa: BLE001 - ConnectionError, RuntimeError, auth: one line
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DLFError(f"--ray {address}: cannot connect ({first})") from None
    return cluster_info(ray, address)


def cluster_info(ray: Any, address: str) -> ClusterInfo:
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    total = ray.cluster_resources()
    per_node = [n.get("Resources", {}).get("GPU", 0.0) for n in nodes]
    shown = address
    if address in (LOCAL, AUTO):
        try:
            shown = f"{address} ({ray.get_runtime_context().gcs_address})"
        except Exception:  # noqa: BLE001 - Ray Client sessions do not expose it; the name is enough
            pass
    return ClusterInfo(address=shown, nodes=len(nodes), cpus=total.get("CPU", 0.0), gpus=total.get("GPU", 0.0),
                       max_node_gpus=max(per_node, default=0.0))


def disconnect() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def forwarded_env() -> dict[str, str]:
    """The driver's settings that decide what a run is (code version pin, MLflow credentials)."""
    keep = ("DLF_CODE_VERSION", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
            "DLF_RAY_CLAIM_TTL")
    return {k: os.environ[k] for k in keep if k in os.environ}


def _local_cpus() -> int:
    from dlf.run.local import cpu_cores

    return cpu_cores()


def _route_driver_messages(ray: Any) -> None:
    """Ray prints what its raylets push to drivers (a worker died, a task is retried) on stdout,
    whatever ``log_to_driver`` says; send it to the ``dlf.ray`` logger instead."""
    worker = getattr(getattr(ray, "_private", None), "worker", None)
    if worker is None or not hasattr(worker, "print_to_stdstream"):
        return

    def to_log(data: dict, ignore_prefix: bool = False) -> None:
        for line in data.get("lines", []):
            log.info("%s", line)

    worker.print_to_stdstream = to_log
