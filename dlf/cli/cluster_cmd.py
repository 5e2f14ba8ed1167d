"""``worker`` and ``queue status``: run a study's queued runs on any number of hosts (docs/cluster.md)."""
from __future__ import annotations

from typing import Optional

import typer

from dlf.cli.options import QueueOpt


def worker(
    queue: QueueOpt,
    devices: Optional[str] = typer.Option(
        None, "--devices", help="GPU indices for this host, e.g. 0,1: one worker process per GPU; 'cpu' forces the CPU."),
    tracking_uri: Optional[str] = typer.Option(
        None, "--tracking-uri", help="MLflow tracking server; default: the URI each run was enqueued with."),
    study: Optional[str] = typer.Option(None, "--study", help="Only claim runs of this study."),
    follow: bool = typer.Option(False, "--follow", help="Keep polling for new runs when the queue is drained."),
    poll: float = typer.Option(5.0, "--poll", min=0.05, help="Seconds between claims while nothing is claimable."),
    stale: float = typer.Option(
        60.0, "--stale", min=1.0, help="Seconds without a heartbeat after which others may reclaim this worker's run."),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, help="Torch threads per run (default: the cores, split between --devices workers)."),
    data_root: Optional[str] = typer.Option(
        None, "--data-root", help="This host's MMSA data folder, when it differs from the enqueuing host's."),
) -> None:
    """Claim runs from the queue, train them, record the results; exit when the queue is drained."""
    from rich.console import Console

    from dlf.cluster.launch import start_workers
    from dlf.cluster.worker import WorkerOptions

    console = Console(stderr=True, highlight=False)
    opts = WorkerOptions(queue_url=queue, tracking_uri=tracking_uri, study=study, follow=follow, poll=poll,
                         stale=stale, threads=threads, data_root=data_root)
    code = start_workers(opts, devices, on_event=lambda line: console.print(line, markup=False))
    raise typer.Exit(code)


def status(
    queue: QueueOpt,
    study: Optional[str] = typer.Option(None, "--study", help="Only this study's runs."),
    all_rows: bool = typer.Option(False, "--all", help="List every run, not only the running and failed ones."),
) -> None:
    """Show pending, running (by whom, heartbeat age), done and failed (with the error) runs."""
    from rich.console import Console
    from rich.table import Table

    from dlf.cluster.launch import queue_rows
    from dlf.cluster.queue import STATES

    rows = queue_rows(queue, study)
    console = Console(highlight=False)
    summary = Table(title="dlf-ablate queue", title_justify="left")
    for col in ("study", *STATES, "total"):
        summary.add_column(col, justify="left" if col == "study" else "right")
    for name in dict.fromkeys(r.study for r in rows):
        states = [r.state for r in rows if r.study == name]
        summary.add_row(name, *(str(states.count(s)) for s in STATES), str(len(states)))
    console.print(summary if rows else "the queue is empty")
    shown = [r for r in rows if all_rows or r.state in ("running", "failed")]
    if shown:
        detail = Table(show_lines=False)
        for col in ("study", "run", "state", "worker", "heartbeat", "attempts", "seconds", "error"):
            detail.add_column(col, overflow="fold")
        for r in shown:
            beat = f"{r.heartbeat_age:.0f}s ago" if r.state == "running" and r.heartbeat_age is not None else ""
            detail.add_row(r.study, f"{r.name} ({r.key[:8]})", r.state, r.worker or (r.workers[-1] if r.workers else ""),
                           beat, f"{r.attempts}/{r.max_attempts}", f"{r.seconds:.1f}" if r.seconds else "",
                           r.error or "")
        console.print(detail)


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
    queue_app = typer.Typer(help="Inspect the cluster work queue (PostgreSQL).", no_args_is_help=True)
    queue_app.command("status")(status)
    app.add_typer(queue_app, name="queue")
