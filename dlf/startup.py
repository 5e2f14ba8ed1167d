"""Process start-up (stdlib only): library warnings, and the cyclic garbage collector around a
process's heavy imports and its exit.

Importing torch (with dynamo, which ``torch.optim`` pulls in) and MLflow creates about a million
long-lived objects, and every full collection walks all of them again: during the imports, and
once more when the interpreter exits. Measured here (2-core CPU) for torch + Adam + an MLflow
client: 5.3-6.4 s from start to exit as is, 3.5 s with the collector paused during the imports and
those objects frozen afterwards (``gc.freeze``: kept out of every later collection).

Process-wide, so it is the business of a process's entry points, never of the library (``train_run``
leaves the collector as it finds it): each pauses it first (``defer_gc``: ``dlf.cli.main``, a spawned
run or tune worker) and freezes before exit (``freeze_for_exit``). It is settled (``settle_gc``) once
the trainer, torch and all, is imported, where a process starts training: the ``train`` and ``tune``
commands, a study run in the CLI's own process (``dlf.run.local``), a spawned run worker
(``dlf.run.workers``) or tune worker (``dlf.tune.worker``), a Ray task (``dlf.cluster.ray_run``).
"""
from __future__ import annotations

import gc
import sys
import warnings

__all__ = ["defer_gc", "settle_gc", "freeze_for_exit", "quiet_library_warnings"]

# Any module but the project's own: its warnings (and library warnings that point at its code)
# stay visible.
_LIBRARY_MODULES = r"(?!dlf(\.|$))"

_deferred = False


def defer_gc() -> None:
    """Pause the cyclic collector for start-up (a no-op if someone already turned it off)."""
    global _deferred
    if gc.isenabled():
        gc.disable()
        _deferred = True


def settle_gc() -> None:
    """After the imports: freeze what exists, then collect normally (only new objects from here on)."""
    global _deferred
    if _deferred:
        gc.freeze()
        gc.enable()
        _deferred = False


def freeze_for_exit() -> None:
    """Just before the process ends: leave everything out of the interpreter's final collections."""
    gc.freeze()


def quiet_library_warnings() -> None:
    """Hide the libraries' own warnings (deprecations and notices of MLflow, pydantic, Optuna,
    torch...): nothing a user can act on, and printed before an ``error:`` line they turn one
    line into several. A user's own -W / PYTHONWARNINGS settings are left alone."""
    if sys.warnoptions:
        return
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=_LIBRARY_MODULES)
    # Optuna's ExperimentalWarning points at the caller (this project), which uses those features on purpose.
    warnings.filterwarnings("ignore", message=r".* is experimental \(supported from", category=UserWarning)
