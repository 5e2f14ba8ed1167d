"""The ``dlf-ablate`` command line: thin Typer commands, each calling one library function.

Command modules import their heavy dependencies (torch, mlflow, optuna) inside the command
functions so that ``--help`` stays fast.
"""
from __future__ import annotations

import sys

import typer

from dlf.errors import DLFError
from dlf.startup import defer_gc, freeze_for_exit, quiet_library_warnings

app = typer.Typer(
    name="dlf-ablate",
    help="Reproduce and extend the DLF (AAAI 2025) ablation studies: data, train, run studies, tune, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _register() -> None:
    from dlf.cli import analysis_cmd, checkpoint_cmd, cluster_cmd, data_cmd, model_cmd, report_cmd, run_cmd, tune_cmd

    for mod in (data_cmd, model_cmd, checkpoint_cmd, run_cmd, tune_cmd, report_cmd, analysis_cmd, cluster_cmd):
        mod.register(app)


_register()


def fail(message: str) -> None:
    """Print one clear error line and exit 2 (bad input), never a traceback."""
    typer.echo(f"error: {message}", err=True)
    raise SystemExit(DLFError.exit_code)


def main() -> None:
    defer_gc()  # through the command's heavy imports; it settles once they are done (dlf.startup: ~1-2 s)
    quiet_library_warnings()  # bad input is one `error:` line, without library chatter before it
    try:
        app()
    except DLFError as err:
        fail(str(err))
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    finally:
        freeze_for_exit()
