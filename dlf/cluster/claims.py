"""Claims shared by every driver of a Ray cluster: one named actor holds leases on run keys.

A run key of a study is trained by whoever holds its lease. The lease table is a detached named
actor on the head node (:func:`claim_table`), so every driver of the cluster, on any host, asks
the same table; it survives the drivers. A lease names its holder by a token: a run's Ray task
uses its task id, which Ray keeps across the retries of that task, so a retry after its worker or
node died takes the lease over at once. A holder renews its lease from a thread
(:class:`Lease`); a lease not renewed for ``ttl`` seconds (its driver was killed and Ray ended its
tasks) lapses and the next claimer takes it. A holder that finds its lease taken stops its run
(the lease was lost, another holder trains the key).

``import ray`` happens inside the functions only: the table itself is plain Python, so that it is
testable without a cluster.
"""
from __future__ import annotations

import _thread
import contextlib
import os
import threading
import time
import uuid
from typing import Any, Iterator

TABLE_NAME = "dlf-claims"
NAMESPACE = "dlf-ablate"
DEFAULT_TTL = 30.0  # seconds a lease lasts without renewal (DLF_RAY_CLAIM_TTL overrides)


def claim_ttl() -> float:
    """The lease time: ``$DLF_RAY_CLAIM_TTL`` seconds, else :data:`DEFAULT_TTL`."""
    try:
        return max(1.0, float(os.environ.get("DLF_RAY_CLAIM_TTL", DEFAULT_TTL)))
    except ValueError:
        return DEFAULT_TTL


class ClaimTable:
    """name -> (token, expiry): the state of the claims actor (one call at a time, as Ray runs it)."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.held: dict[str, tuple[str, float]] = {}

    def hold(self, name: str, token: str, ttl: float) -> bool:
        """Take or renew the lease ``name`` for ``token``: True unless another live holder has it."""
        now = self.clock()
        current = self.held.get(name)
        if current is not None and current[0] != token and current[1] > now:
            return False
        self.held[name] = (token, now + ttl)
        return True

    def release(self, name: str, token: str) -> bool:
        if self.held.get(name, ("",))[0] != token:
            return False
        del self.held[name]
        return True

    def holder(self, name: str) -> str | None:
        current = self.held.get(name)
        return current[0] if current is not None and current[1] > self.clock() else None


def claim_table() -> Any:
    """The cluster's claims actor, created on the head node by the first driver that asks."""
    import ray

    actor = ray.remote(ClaimTable).options(
        name=TABLE_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True, num_cpus=0,
        max_restarts=-1, max_concurrency=1, resources={"node:__internal_head__": 0.001})
    return actor.remote()


class Lease:
    """Holds lease ``name`` while the block runs, renewing it; ``acquired`` says whether it got it.

    If a renewal finds the lease taken (this holder was silent past its ``ttl``), the main thread
    gets a KeyboardInterrupt, which ends the run in it as an interrupted one, and ``lost`` is set.
    """

    def __init__(self, table: Any, name: str, token: str, ttl: float) -> None:
        self.table, self.name, self.token, self.ttl = table, name, token, ttl
        self.acquired = self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Lease:
        import ray

        self.acquired = ray.get(self.table.hold.remote(self.name, self.token, self.ttl))
        if self.acquired:
            self._thread = threading.Thread(target=self._renew, name="dlf-lease", daemon=True)
            self._thread.start()
        return self

    def _renew(self) -> None:
        import ray

        while not self._stop.wait(self.ttl / 4):
            try:
                ok = ray.get(self.table.hold.remote(self.name, self.token, self.ttl), timeout=self.ttl / 2)
            except Exception:  # noqa: BLE001 - the table restarts or is slow: try again next beat
                continue
            if not ok and not self._stop.is_set():
                self.lost = True
                _thread.interrupt_main()
                return

    def __exit__(self, *exc: Any) -> None:
        import ray

        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.acquired and not self.lost:
            with contextlib.suppress(Exception):
                ray.get(self.table.release.remote(self.name, self.token), timeout=30)


@contextlib.contextmanager
def cluster_lock(table: Any, name: str, ttl: float, poll: float = 0.5) -> Iterator[None]:
    """A mutex across the cluster's drivers (e.g. around creating a study's experiment)."""
    token = uuid.uuid4().hex
    while True:
        lease = Lease(table, name, token, ttl)
        with lease:
            if lease.acquired:
                yield
                return
        time.sleep(poll)
