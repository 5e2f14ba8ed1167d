"""Cluster glue between a study, the tracking server and the work queue (docs/cluster.md).

:func:`enqueue_study` is what ``dlf-ablate run STUDY --queue URL`` calls: it expands the study,
creates the experiment and parent runs on the tracking server before any worker starts, and queues
the runs whose key has not FINISHED there.
"""
from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from typing import Any, Callable

from dlf.errors import DLFError
from dlf.cluster.queue import Queue, QueueRow, check_url, redact


@dataclass
class EnqueueSummary:
    study: str
    queue: str  # redacted URL
    tracking_uri: str
    total: int
    cached: int  # already FINISHED in the tracking store: not queued
    added: int
    requeued: int  # were failed in the queue: pending again, attempts reset
    kept: int  # already queued (pending, running or done): left as they are
    warnings: list[str]

    def lines(self) -> list[str]:
        out = [f"{self.study}: {self.total} runs; {self.cached} already finished in {self.tracking_uri}; "
               f"queued {self.added} new, {self.requeued} failed again, {self.kept} already queued "
               f"on {self.queue}",
               f"start workers with: dlf-ablate worker --queue '{self.queue}'"]
        return out + [f"warning: {w}" for w in self.warnings]


def enqueue_study(study, queue_url: str, tracking_uri: str | None = None, data_root=None,
                  set_overrides=None, set_file=None, max_attempts: int = 3) -> EnqueueSummary:
    """Expand ``study`` (a StudySpec, a name or a path) and queue its runs that have not finished.

    The experiment and every parent run are created here, before any worker starts, so that
    workers never race to create them; each row carries the tracking URI the workers log to.
    """
    from dlf.run import tracking
    from dlf.study.spec import expand, load_study

    spec = study if hasattr(study, "seeds") else load_study(study)
    specs = expand(spec, data_root=data_root, set_overrides=set_overrides, set_file=set_file)
    uri = tracking.resolve_tracking_uri(tracking_uri)
    problem = tracking.tracking_problem(uri)  # MLflow's own client retries for minutes before it gives up
    if problem:
        raise DLFError(f"{problem}; start it or fix --tracking-uri")
    with Queue(queue_url) as q:  # reach the database before writing anything to the tracking store
        c = tracking.client(uri)
        exp = tracking.ensure_experiment(c, spec.name, uri)
        tracking.ensure_parents(c, exp, specs)
        finished = tracking.finished_keys(c, exp)
        todo = [s for s in specs if s.key not in finished]
        q.ensure_schema()
        counts = q.enqueue([(s.key, s.study, s.title, s.to_dict()) for s in todo], uri, max_attempts)
    warnings = []
    if not uri.startswith(("http://", "https://", "postgresql", "mysql")):
        warnings.append(f"tracking URI {uri} is a local store: workers on other hosts will not log to it; "
                        "pass --tracking-uri http://<mlflow-server>:5000")
    return EnqueueSummary(spec.name, redact(check_url(queue_url)), uri, len(specs), len(specs) - len(todo),
                          counts["added"], counts["requeued"], counts["kept"], warnings)


def queue_rows(queue_url: str, study: str | None = None) -> list[QueueRow]:
    """Every row of the queue (of one study), in enqueue order: the data of ``queue status``."""
    with Queue(queue_url) as q:
        q.ensure_schema()
        return q.rows(study)


# ------------------------------------------------------------------ starting workers on this host
# Set for the per-GPU children: the parent has checked their GPUs (dlf.pool.require_gpus) already.
GPU_CHECKED = "DLF_GPUS_CHECKED"


def physical_gpu(index: str) -> str:
    """GPU ``index`` counted within an inherited CUDA_VISIBLE_DEVICES (as Slurm sets it)."""
    inherited = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if not inherited:
        return index
    if int(index) >= len(inherited):
        raise DLFError(f"--devices {index}: only {len(inherited)} GPUs are visible "
                       f"(CUDA_VISIBLE_DEVICES={','.join(inherited)}); use indices 0..{len(inherited) - 1}")
    return inherited[int(index)]


def pin_gpu(index: str) -> None:
    """Make one GPU the only visible one; before torch initialises CUDA."""
    os.environ["CUDA_VISIBLE_DEVICES"] = physical_gpu(index)


def start_workers(opts, devices: str | None, on_event: Callable[[str], None]) -> int:
    """Run one worker here, or one child worker per GPU of ``devices``; the exit code."""
    from dlf.run.local import cpu_cores, parse_devices, require_gpus, thread_budget
    from dlf.cluster.worker import Worker

    parsed = parse_devices(devices, check_cuda=False)  # checked once the GPUs are pinned (below)
    gpus = parsed if parsed and parsed != ["cpu"] else None
    if gpus and len(gpus) > 1:
        physical = [physical_gpu(g) for g in gpus]
        require_gpus(devices, gpus)
        threads = opts.threads or thread_budget(len(gpus), cpu_cores())[0]
        return _spawn_per_gpu(opts, physical, threads)
    if gpus:
        pin_gpu(gpus[0])
        if not os.environ.get(GPU_CHECKED):  # after pinning: the one visible GPU must exist
            require_gpus(devices, ["0"])
        opts.device = "cuda"
    elif parsed == ["cpu"]:
        opts.device = "cpu"
    opts.threads = opts.threads or thread_budget(1, cpu_cores())[0]
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # no "View run at" per run
    report = Worker(opts, on_event=on_event).run()
    ending = f"stopped by {report.stopped_by}" if report.stopped_by else "queue drained"
    on_event(f"{report.worker}: {len(report.done)} done, {len(report.gave_up)} failed, "
             f"{len(report.lost)} reclaimed by others; {ending}")
    if report.stopped_by:
        return 128 + signal.Signals[report.stopped_by].value
    return 1 if report.gave_up else 0


def _spawn_per_gpu(opts, physical: list[str], threads: int) -> int:
    """One ``dlf-ablate worker --devices 0`` child per GPU; signals are forwarded to the children."""
    import subprocess
    import sys

    args = ["worker", "--devices", "0", "--poll", str(opts.poll), "--stale", str(opts.stale),
            "--threads", str(threads)]
    for flag, value in (("--tracking-uri", opts.tracking_uri), ("--study", opts.study), ("--data-root", opts.data_root)):
        if value:
            args += [flag, value]
    args += ["--follow"] if opts.follow else []
    children = []
    for gpu in physical:
        # The queue URL (it may hold a password) goes through the environment, not the argv.
        env = {**os.environ, "DLF_QUEUE": opts.queue_url, "CUDA_VISIBLE_DEVICES": gpu,
               "OMP_NUM_THREADS": str(threads), GPU_CHECKED: "1"}
        children.append(subprocess.Popen([sys.executable, "-c", "from dlf.cli import main; main()", *args], env=env))

    def forward(signum: int, frame: Any) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        codes = [child.wait() for child in children]
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    return max(codes, key=abs)
