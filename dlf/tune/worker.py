"""One tuning worker: ask Optuna for a trial, train it, report per-epoch validation values, tell.

The objective reads the selected epoch's validation metrics only (``TrainResult.history`` at
``best_epoch``, keys ``val_*``). ``TrainResult.test`` is never read here: test metrics cannot reach
an objective value, the sampler, a trial attribute or a trial's MLflow run.

Several workers (processes, possibly on several machines with an RDB storage) run this same
loop on one Optuna study. ``--trials N`` is a total over all of them: a worker stops when the
study holds N trials that are COMPLETE, PRUNED or still RUNNING (see ``dlf.tune.storage``).
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from dlf import interrupts
from dlf.config import RunConfig, apply_overrides
from dlf.errors import DLFError
from dlf.startup import defer_gc, freeze_for_exit, quiet_library_warnings, settle_gc
from dlf.tune.space import SearchSpace, parse_space
from dlf.tune.storage import (
    Heartbeat,
    claim_lock,
    count_claimed,
    mark_owner,
    open_storage,
    reap_stale,
    retry_trial,
)

# val_loss = val_mae (the official selection criterion) but both names are accepted.
MINIMISE = {"val_loss", "val_mae"}
MAXIMISE = {"val_corr", "val_acc2", "val_f1", "val_acc7", "val_acc5", "val_acc2_has0", "val_f1_has0"}
MAX_CONSECUTIVE_FAILURES = 3


def direction_of(objective: str) -> str:
    if objective in MINIMISE:
        return "minimize"
    if objective in MAXIMISE:
        return "maximize"
    raise DLFError(f"--objective {objective!r}: unknown validation metric; use one of "
                   f"{', '.join(sorted(MINIMISE | MAXIMISE))} (test metrics are never an objective)")


@dataclass(frozen=True)
class TuneSetup:
    """What every worker process needs (picklable: it crosses a spawn boundary)."""

    study_name: str
    storage: str
    trials: int
    objectives: tuple[str, ...]
    space: dict[str, Any]  # validated raw mapping; rebuilt with parse_space in each worker
    space_source: str
    base: RunConfig  # the search config: study + --set layers, variant, first seed
    dataset: str  # spec as written ('synthetic-mosi', 'mosi', a path)
    data_path: str  # resolved pickle
    variant: str
    study: str  # the study YAML's name
    pruner: str = "median"  # median | hyperband | none (forced to none with several objectives)
    pruner_startup: int = 5  # median: trials before pruning starts
    pruner_warmup: int = 3  # median: epochs of each trial before it may be pruned
    sampler_seed: int = 0
    startup_trials: int = 10  # TPE: random trials before the model kicks in
    tracking_uri: str | None = None
    experiment_id: str | None = None
    parent_run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def directions(self) -> list[str]:
        return [direction_of(o) for o in self.objectives]

    @property
    def pruning(self) -> bool:
        return self.pruner != "none" and len(self.objectives) == 1


def make_pruner(setup: TuneSetup) -> optuna.pruners.BasePruner:
    if not setup.pruning:
        return optuna.pruners.NopPruner()
    if setup.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=setup.pruner_startup, n_warmup_steps=setup.pruner_warmup)
    if setup.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=setup.base.train.max_epochs)
    raise DLFError(f"--pruner {setup.pruner!r}: expected median, hyperband or none")


def make_sampler(setup: TuneSetup, salt: int) -> optuna.samplers.BaseSampler:
    """Seeded multivariate TPE with constant liar (running trials count as bad guesses).

    ``salt`` (worker index, trials already stored) keeps workers and resumed runs from replaying
    the same random start-up draws while a given history stays reproducible.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(multivariate=True, constant_liar=True, n_startup_trials=setup.startup_trials,
                                          seed=(setup.sampler_seed * 1_000_003 + salt) % 2**32)


def load_tune_study(setup: TuneSetup, storage: Any, salt: int = 0) -> optuna.Study:
    return optuna.load_study(study_name=setup.study_name, storage=storage,
                             sampler=make_sampler(setup, salt), pruner=make_pruner(setup))


def selected_validation(result: Any) -> dict[str, float]:
    """``val_*`` metrics of the selected epoch (history is 1-based by epoch)."""
    row = result.history[result.best_epoch - 1]
    return {k: float(v) for k, v in row.items() if k.startswith("val_")}


@dataclass
class WorkerContext:
    setup: TuneSetup
    storage: Any
    study: optuna.Study
    space: SearchSpace
    dataset: Any
    runtime: Any
    tracker: Any  # dlf.tune.track.TrialTracker


def run_worker(setup: TuneSetup, runtime: Any, worker: int = 0,
               on_trial: Callable[[optuna.Study], None] | None = None) -> None:
    """Run trials until the study holds ``setup.trials`` finished-or-running trials."""
    from dlf.data.mmsa import load_dataset
    from dlf.tune.track import TrialTracker

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(setup.storage)
    salt = worker * 7919 + len(optuna.load_study(study_name=setup.study_name, storage=storage).trials)
    dataset = load_dataset(setup.data_path, setup.base.data)
    ctx = WorkerContext(setup=setup, storage=storage, study=load_tune_study(setup, storage, salt),
                        space=parse_space(setup.space, setup.space_source, setup.base),
                        dataset=dataset, runtime=runtime, tracker=TrialTracker(setup, dataset))
    failures = 0
    while (trial := claim_trial(ctx)) is not None:
        state = run_trial(ctx, trial)
        failures = failures + 1 if state == TrialState.FAIL else 0
        if on_trial is not None:
            on_trial(ctx.study)
        if failures >= MAX_CONSECUTIVE_FAILURES:
            error = trial_error(ctx.study, trial.number)
            raise DLFError(f"tune: {failures} trials in a row failed (last: trial {trial.number}: {error}); "
                           "fix the cause and rerun the same command to resume")


def claim_trial(ctx: WorkerContext) -> optuna.Trial | None:
    """Reap dead workers' trials, then ask for a new trial unless the total is reached."""
    with claim_lock(ctx.setup.storage):
        for frozen in reap_stale(ctx.study, ctx.storage):
            ctx.tracker.end_stale(frozen)
        if count_claimed(ctx.study) >= ctx.setup.trials:
            return None
        with warnings.catch_warnings():
            # Optuna warns that RDB heartbeats belong to optimize(); this loop runs its own (Heartbeat).
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = ctx.study.ask()
        mark_owner(trial)
        return trial


def trial_error(study: optuna.Study, number: int) -> str:
    return study.trials[number].user_attrs.get("dlf.error", "unknown error")


def run_trial(ctx: WorkerContext, trial: optuna.Trial) -> TrialState:
    """Train one trial; tell Optuna COMPLETE (validation objective), PRUNED or FAIL."""
    setup = ctx.setup
    overrides = ctx.space.suggest(trial)
    run_id = None
    try:
        with interrupts.held():  # the MLflow run and the trial's pointer to it (for end_stale) appear together
            run_id = ctx.tracker.start(trial.number, overrides)
            trial.set_user_attr("dlf.mlflow_run_id", run_id)
        cfg = apply_overrides(setup.base, overrides, source=f"trial {trial.number}")
        with Heartbeat(ctx.storage, trial):
            result = _train(ctx, cfg, trial, run_id)
        val = selected_validation(result)
        values = [val[o] for o in setup.objectives]
        if not all(math.isfinite(v) for v in values):
            raise DLFError(f"objective {setup.objectives} is not finite at the selected epoch: {values}")
    except optuna.TrialPruned:
        return _finish(ctx, trial, run_id, TrialState.PRUNED)
    except (Exception, KeyboardInterrupt) as err:
        if run_id is None:  # the store refused the run: nothing of this trial to close
            raise
        error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        trial.set_user_attr("dlf.error", error)
        _finish(ctx, trial, run_id, TrialState.FAIL, error=error)
        if isinstance(err, KeyboardInterrupt):
            retry_trial(ctx.study, ctx.storage, trial)  # interrupted, not wrong: run it again next time
            raise
        return TrialState.FAIL
    with interrupts.held():  # a trained trial is told as a whole; an interrupt then stops what follows
        trial.set_user_attr("dlf.best_epoch", result.best_epoch)
        trial.set_user_attr("dlf.epochs", result.epochs)
        trial.set_user_attr("dlf.val", val)
        ctx.tracker.log_final(run_id, val, result.best_epoch, result.epochs, result.train_seconds)
        return _finish(ctx, trial, run_id, TrialState.COMPLETE, values)


def _train(ctx: WorkerContext, cfg: RunConfig, trial: optuna.Trial, run_id: str) -> Any:
    from dlf.train.loop import train_run

    setup = ctx.setup

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        ctx.tracker.log_epoch(run_id, epoch, metrics)
        trial.set_user_attr("dlf.epochs", epoch)  # pruned trials keep how far they got
        if setup.pruning:
            trial.report(metrics[setup.objectives[0]], step=epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"trial {trial.number} pruned after epoch {epoch}")

    return train_run(cfg, ctx.dataset, ctx.runtime, on_epoch=on_epoch)


def _finish(ctx: WorkerContext, trial: optuna.Trial, run_id: str, state: TrialState,
            values: list[float] | None = None, error: str | None = None) -> TrialState:
    ctx.study.tell(trial, values, state=state)
    ctx.tracker.end(run_id, state.name, error)
    return state


def worker_main(setup: TuneSetup, runtime: Any, worker: int, env: dict[str, str]) -> None:
    """Entry point of a spawned worker process: apply its device/thread environment, then loop."""
    os.environ.update(env)
    defer_gc()  # until its first trial trains (dlf.startup)
    quiet_library_warnings()  # as in the main process (a spawned interpreter starts without its filters)
    import mlflow  # noqa: F401
    import dlf.train.loop  # noqa: F401

    settle_gc()  # collect normally from here on
    try:
        run_worker(setup, runtime, worker)
    except DLFError as err:
        raise SystemExit(f"error: worker {worker}: {err}") from None
    finally:
        freeze_for_exit()
