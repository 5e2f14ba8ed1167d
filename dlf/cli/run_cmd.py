"""``dlf-ablate run``, ``plan`` and ``ui``: study YAML -> tracked runs (thin wrappers over dlf.run.commands)."""
from __future__ import annotations

from typing import Optional

import typer

from dlf.cli.options import DataRootOpt, DevicesOpt, SetFileOpt, SetOpt, TrackingUriOpt

StudyArg = typer.Argument(..., help="Study YAML path, or a built-in study name (quickstart, table1, table2).")


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("plan")(plan)
    app.command("ui")(ui)


def run(
    study: str = StudyArg,
    set_: SetOpt = None,
    set_file: SetFileOpt = None,
    workers: Optional[int] = typer.Option(None, "--workers", help="Local worker processes (default 1, or one "
                                          "per --devices entry). On CPU each gets cores // workers threads. "
                                          "With --ray: runs at once (default: as many as the cluster fits)."),
    devices: DevicesOpt = None,
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch threads per worker (default: "
                                          "cores // workers)."),
    tracking_uri: TrackingUriOpt = None,
    data_root: DataRootOpt = None,
    ray: Optional[str] = typer.Option(None, "--ray", help="Run every pending run as a task on a Ray cluster: "
                                      "auto (the cluster this host belongs to), local (a Ray instance started "
                                      "for this command), HOST:PORT or ray://HOST:10001 (docs/cluster.md)."),
    gpus_per_run: Optional[float] = typer.Option(None, "--gpus-per-run", help="With --ray: GPUs per run; a "
                                                 "fraction packs runs, 0.25 = four runs per GPU (default 0: CPU)."),
    queue: Optional[str] = typer.Option(None, "--queue", hidden=True, help="Retired (use --ray)."),
) -> None:
    """Run a study: every variant x dataset x seed whose run key has not finished yet, tracked in MLflow."""
    from dlf.config import parse_set_options
    from dlf.run.commands import run_command

    if queue:
        from dlf.cli.cluster_cmd import QUEUE_RETIRED
        from dlf.errors import DLFError

        raise DLFError(QUEUE_RETIRED)
    code = run_command(study, parse_set_options(set_ or []), set_file, workers, devices, threads,
                       tracking_uri, data_root, ray=ray, gpus_per_run=gpus_per_run)
    raise typer.Exit(code)


def plan(
    study: str = StudyArg,
    set_: SetOpt = None,
    set_file: SetFileOpt = None,
    tracking_uri: TrackingUriOpt = None,
    data_root: DataRootOpt = None,
) -> None:
    """Dry run: each run's key, whether it is cached, and an estimated training cost."""
    from dlf.config import parse_set_options
    from dlf.run.commands import plan_command

    plan_command(study, parse_set_options(set_ or []), set_file, tracking_uri, data_root)


def ui(
    study: Optional[str] = typer.Argument(None, help="Open this study's runs (name or YAML); default: the "
                                         "experiment of the latest run."),
    tracking_uri: TrackingUriOpt = None,
    host: str = typer.Option("127.0.0.1", "--host", help="Address the UI listens on."),
    port: int = typer.Option(5000, "--port", help="Port the UI listens on."),
) -> None:
    """Serve the MLflow UI on the tracking store and print the address of a study's runs table (Ctrl-C,
    SIGTERM or SIGHUP stops it and its server)."""
    from dlf.run.commands import serve_ui, ui_command

    cmd, url = ui_command(study, tracking_uri, host, port)
    if cmd is None:
        typer.echo(f"the tracking server serves its own UI: {url}")
        return
    typer.echo(f"MLflow UI: {url}  (Ctrl-C to stop)")
    code = serve_ui(cmd)
    if code:
        raise typer.Exit(code)
