"""Terminal front-end of ``dlf-ablate run`` / ``plan`` / ``ui``: rich progress and tables.

The library calls (:func:`dlf.study.spec.expand`, :func:`dlf.run.local.run_study`, :func:`dlf.study.plan.plan_rows`)
know nothing about terminals; this module turns their results and progress events into output.
"""
from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping

from dlf.errors import DLFError


def run_command(study: str, set_overrides: Mapping[str, Any], set_file: Path | None, workers: int | None,
                devices: str | None, threads: int | None, tracking_uri: str | None, data_root: Path | None,
                ray: str | None = None, gpus_per_run: float | None = None) -> int:
    """Expand, run with live progress (here, or as Ray tasks with ``ray``), print the summary; returns
    the exit code (0 all ok, 1 a run failed, 130 interrupted)."""
    from rich.console import Console

    from dlf.run.local import parse_devices, run_study
    from dlf.study.spec import expand, load_study
    from dlf.run.tracking import resolve_tracking_uri

    _check_counts(workers, threads)
    if ray and devices:
        raise DLFError(f"--devices {devices} with --ray: Ray assigns the GPUs; use --gpus-per-run instead")
    if gpus_per_run and not ray:
        raise DLFError("--gpus-per-run needs --ray ADDRESS; on this machine use --devices")
    parsed_devices = parse_devices(devices)  # before anything is read or written: no CUDA here is one line
    spec = load_study(study)
    specs = expand(spec, data_root=data_root, set_overrides=set_overrides, set_file=set_file)
    uri = resolve_tracking_uri(tracking_uri)
    _check_store(uri)  # one line, before the progress display starts
    if ray:  # connected (or refused, in one line) before the progress display starts
        from dlf.cluster.ray_run import RayStudy

        execute = RayStudy.connect(specs, uri, ray, gpus_per_run, threads, workers).run
    else:
        def execute(emit):
            return run_study(specs, uri, workers=workers, devices=parsed_devices, threads=threads, emit=emit)
    console = Console(stderr=False)
    with _Progress(console, spec.name, len(specs)) as view, _sigterm_as_interrupt():
        result = execute(view)
    console.print(summary_table(result))
    counts = result.counts()
    console.print(", ".join(f"{n} {k}" for k, n in counts.items() if n or k != "not run") + f"  (tracking: {uri})")
    if result.interrupted:
        console.print("[yellow]interrupted: run the same command again to finish the missing runs[/]")
        return 130
    return 0 if result.ok else 1


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a batch system's time limit, ``kill``) stops the study as cleanly as Ctrl-C."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _check_store(uri: str) -> None:
    from dlf.run.store_file import check_store_file

    problem = check_store_file(uri)
    if problem:
        raise DLFError(problem)


def _check_port(host: str, port: int) -> None:
    """A busy port fails here in one line, not seconds later inside the MLflow server."""
    import os
    import socket

    try:
        with socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET):
            pass
    except OSError as err:
        raise DLFError(f"--host {host} --port {port}: cannot listen there ({os.strerror(err.errno) if err.errno else err}); "
                       "pass another --port") from None


def _check_counts(workers: int | None, threads: int | None) -> None:
    if workers is not None and workers < 1:
        raise DLFError(f"--workers {workers}: give at least 1 worker process")
    if threads is not None and threads < 1:
        raise DLFError(f"--threads {threads}: give at least 1 thread per worker")


class _Progress:
    """Consumes dlf.run.local events: an overall bar plus one line per busy worker (epoch, val MAE)."""

    def __init__(self, console, study: str, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=False)
        self.overall = self.progress.add_task(f"[bold]{study}", total=total)
        self.lines: dict[int, Any] = {}

    def __enter__(self) -> _Progress:
        from dlf.interrupts import signals_to_main_thread

        with signals_to_main_thread():  # rich's refresh thread must not take a Ctrl-C
            self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for task in self.lines.values():
            self.progress.remove_task(task)
        self.progress.__exit__(*exc)

    def __call__(self, ev: dict) -> None:
        kind = ev["type"]
        if kind == "plan":
            self.progress.update(self.overall, completed=ev["cached"])
            if ev["cached"]:
                self.console.print(f"{ev['cached']} of {ev['total']} runs already finished (cached)")
        elif kind == "warning":
            self.console.print(f"[yellow]warning:[/] {ev['message']}")
        elif kind == "note":
            self.console.print(ev["message"], markup=False)
        elif kind == "start":
            self._line(ev["worker"], f"  {ev['spec'].title}", total=ev["spec"].config.train.max_epochs)
        elif kind == "epoch":
            mae = ev["metrics"].get("val_mae")
            note = f"  val MAE {mae:.4f}" if mae is not None else ""
            self.progress.update(self.lines[ev["worker"]], completed=ev["epoch"],
                                 description=f"  {ev['spec'].title} epoch {ev['epoch']}{note}")
        elif kind == "busy":
            self.console.print(f"{ev['spec'].title}: another process is training this key; checking it again later")
        elif kind == "done":
            self._done(ev)

    def _line(self, worker: int, text: str, total: int) -> None:
        if worker in self.lines:
            self.progress.reset(self.lines[worker], total=total, description=text)
        else:
            self.lines[worker] = self.progress.add_task(text, total=total)

    def _done(self, ev: dict) -> None:
        outcome, spec = ev["outcome"], ev["spec"]
        self.progress.advance(self.overall)
        if outcome.status == "failed":
            self.console.print(f"[red]failed[/] {spec.title}: {outcome.error}")
        elif outcome.status == "finished":
            self.console.print(f"[green]done[/] {spec.title} ({outcome.train_seconds or 0:.1f} s)")


def summary_table(result):
    """Ran / cached / failed per run; cached runs are only counted when there are many."""
    from rich.table import Table

    table = Table(title="run summary", show_lines=False)
    for col in ("status", "variant", "dataset", "seed", "key", "seconds", "note"):
        table.add_column(col, justify="right" if col in ("seed", "seconds") else "left")
    shown = [s for s in result.specs if result.outcomes.get(s.key) is None
             or result.outcomes[s.key].status != "cached" or len(result.specs) <= 20]
    for spec in shown:
        out = result.outcomes.get(spec.key)
        status = out.status if out else "not run"
        style = {"failed": "red", "finished": "green", "not run": "yellow"}.get(status, "dim")
        secs = f"{out.train_seconds:.1f}" if out and out.train_seconds is not None else ""
        table.add_row(f"[{style}]{status}[/]", spec.variant, spec.dataset, str(spec.seed), spec.key[:10], secs,
                      (out.error or "") if out else "")
    hidden = len(result.specs) - len(shown)
    if hidden:
        table.caption = f"+ {hidden} cached runs not listed"
    return table


def plan_command(study: str, set_overrides: Mapping[str, Any], set_file: Path | None,
                 tracking_uri: str | None, data_root: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    from dlf.study.plan import plan_rows
    from dlf.study.spec import expand, load_study
    from dlf.run.tracking import resolve_tracking_uri

    spec = load_study(study)
    specs = expand(spec, data_root=data_root, set_overrides=set_overrides, set_file=set_file)
    rows, total, source = plan_rows(specs, resolve_tracking_uri(tracking_uri))
    table = Table(title=f"plan: {spec.name} ({len(specs)} runs)")
    for col in ("key", "variant", "dataset", "seed", "status", "est. seconds", "cost from"):
        table.add_column(col, justify="right" if col in ("seed", "est. seconds") else "left")
    for r in rows:
        table.add_row(r.spec.key[:10], r.spec.variant, r.spec.dataset, str(r.spec.seed),
                      "[dim]cached[/]" if r.cached else "pending",
                      "" if r.seconds is None else f"{r.seconds:.0f}", r.source)
    console = Console()
    console.print(table)
    pending = sum(not r.cached for r in rows)
    console.print(f"{pending} pending, {len(rows) - pending} cached; estimated {total / 60:.1f} min of training "
                  f"for the pending runs on one worker ({source})")


def ui_command(study: str | None, tracking_uri: str | None, host: str, port: int) -> tuple[list[str] | None, str]:
    """(command to run or None when the store is already a server, URL to open): the runs table of
    the study's experiment, or without a study of the experiment with the latest run."""
    from dlf.run.tracking import local_state_dir, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        return None, uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise DLFError(f"no tracking store at {uri}; run a study first, or pass --tracking-uri")
    _check_store(uri)  # the MLflow server would fail on it, or add its tables to another program's file
    _check_port(host, port)
    url = _open_url(study, uri, f"http://{host}:{port}")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port),
           "--default-artifact-root", (local_state_dir(uri) / "mlartifacts").as_uri()]
    return cmd, url


def _open_url(study: str | None, uri: str, base: str) -> str:
    """The runs page of ``study``'s experiment (tagged as model training on the way, for stores
    made before the tag), else of the latest run's experiment, else the list of experiments."""
    from dlf.run.mlflow_view import home_url, mark_model_training, runs_url
    from dlf.run.tracking import client
    from dlf.study.spec import load_study

    c = client(uri)
    if study:
        name = load_study(study).name
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise DLFError(f"study {name!r} has no runs in {uri} yet; run it first (dlf-ablate run {study})")
    else:
        latest = c.search_runs([e.experiment_id for e in c.search_experiments()], max_results=1,
                               order_by=["attributes.start_time DESC"])
        if not latest:
            return home_url(base)
        exp = c.get_experiment(latest[0].info.experiment_id)
    mark_model_training(c, exp)
    return runs_url(base, exp.experiment_id)


def serve_ui(cmd: list[str], grace: float = 10.0) -> int:
    """Run the MLflow UI until it exits or this process gets SIGINT, SIGTERM or SIGHUP; then stop it.

    The server (MLflow starts a web server and helper processes under it) gets a session of its
    own and is always stopped as a whole group: SIGTERM, then SIGKILL after ``grace`` seconds. So
    ``kill <ui pid>`` or a closed terminal no longer leaves it serving on the port. Returns 0 after
    Ctrl-C, 128 + the signal after SIGTERM/SIGHUP, else the server's own exit code.
    """
    import subprocess

    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    got: list[int] = []
    proc = None

    def stop(signum, frame):
        got.append(signum)
        if proc is not None:  # not while Popen runs: the server could be started, yet unknown here
            raise _Stop

    old = {s: signal.signal(s, stop) for s in stops}
    try:
        proc = subprocess.Popen(cmd, start_new_session=True)  # Ctrl-C reaches it through us only
        code = proc.wait() if not got else None
    except _Stop:
        code = None
    finally:
        for s in stops:  # a second signal must not cut the clean-up short
            signal.signal(s, signal.SIG_IGN)
        if proc is not None:
            _stop_group(proc, grace)
        for s, handler in old.items():
            signal.signal(s, handler)
    if code is not None:
        return code
    return 0 if got[0] == signal.SIGINT else 128 + got[0]


class _Stop(Exception):
    """Raised by serve_ui's signal handler (not a KeyboardInterrupt: nothing else catches it)."""


def _stop_group(proc, grace: float) -> None:
    import os
    import subprocess

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)  # its helpers too, even after the leader is gone
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:  # the leader is gone: make sure nothing of its group stays
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        return
