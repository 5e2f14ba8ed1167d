"""``worker`` and ``queue status``: the retired PostgreSQL run queue, kept as one line saying how to
move to Ray (docs/cluster.md). Any options are accepted, so that old scripts get that line."""
from __future__ import annotations

import typer

from dlf.errors import DLFError

QUEUE_RETIRED = ("the PostgreSQL run queue is retired: run the study on a Ray cluster instead, "
                 "dlf-ablate run STUDY --ray ADDRESS --tracking-uri http://MLFLOW-HOST:5000 (docs/cluster.md); "
                 "runs the queue finished are in MLflow and are not trained again")
_ANY_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def retired(ctx: typer.Context) -> None:
    """Retired: the run queue gave way to Ray (dlf-ablate run STUDY --ray ADDRESS)."""
    raise DLFError(QUEUE_RETIRED)


def register(app: typer.Typer) -> None:
    for name in ("worker", "queue"):  # `queue status ...`: the rest are extra arguments
        app.command(name, context_settings=_ANY_ARGS, hidden=True)(retired)
