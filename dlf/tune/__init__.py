"""``dlf-ablate tune``: search loss weights with Optuna on validation metrics, resumable and tracked.

Flow: :func:`prepare` (study YAML + CLI -> :class:`TunePlan`), :func:`open_study` (create or resume
the Optuna study, refuse a changed space or setup, enqueue the official weights as trial 0 of a new
study), the search (``dlf.tune.worker``, in this process, ``--workers`` spawned processes or Ray tasks), the
top-K re-evaluation over seeds and the export (``dlf.tune.eval``), plots (``dlf.tune.report``).

The ``tune:`` mapping of a study YAML (``studies/tune.yaml``) sets the defaults; CLI flags win.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlf.tune.plan import TUNE_DEFAULTS, TuneOptions, TunePlan, prepare, tune_section

__all__ = ["TuneOptions", "TunePlan", "TuneResult", "prepare", "tune", "tune_section", "TUNE_DEFAULTS"]


@dataclass
class TuneResult:
    study_name: str
    storage: str
    objectives: tuple[str, ...]
    pruning: bool
    created: bool
    reaped: int
    counts: dict[str, int]
    candidates: list  # dlf.tune.eval.Candidate, best mean first
    pareto: list[tuple[int, list[float]]]
    export: Path | None
    plots: list[Path]
    notes: list[str]
    errors: list[str]
    parent_run_id: str


def tune(opts: TuneOptions) -> TuneResult:
    """Search, re-evaluate the top K over seeds, export the winner, plot; see the module docstring."""
    from dlf.tune.report import study_counts
    from dlf.tune.search import open_study, reap_before_start
    from dlf.tune.storage import check_storage

    plan = prepare(opts)
    check_storage(plan.setup.storage)  # before a tracking run is opened for a search that cannot start
    cluster = _connect_ray(plan, opts)  # likewise: a cluster that cannot run it is refused first
    try:
        setup = plan.setup = _attach_tracking(plan, opts)
        study, created = open_study(setup)
        reaped = reap_before_start(setup)
        errors, candidates = _search_and_reevaluate(plan, opts, study, cluster)
    finally:
        if cluster is not None:
            cluster.close()
    export, plots, notes = _conclude(plan, opts, study, candidates, errors)
    pareto = [(t.number, list(t.values)) for t in study.best_trials] if len(setup.objectives) > 1 else []
    return TuneResult(study_name=setup.study_name, storage=setup.storage, objectives=setup.objectives,
                      pruning=setup.pruning, created=created, reaped=reaped, counts=study_counts(study),
                      candidates=candidates, pareto=pareto, export=export, plots=plots, notes=notes, errors=errors,
                      parent_run_id=setup.parent_run_id)


def _connect_ray(plan: TunePlan, opts: TuneOptions) -> Any:
    """The cluster the workers run on with ``--ray`` (checked against the stores), else None."""
    if not opts.ray:
        if opts.gpus_per_run:
            from dlf.errors import DLFError

            raise DLFError("--gpus-per-run needs --ray ADDRESS; on this machine use --devices")
        return None
    from dlf.cluster.ray_tune import RaySearch
    from dlf.run.tracking import resolve_tracking_uri

    if opts.devices:
        from dlf.errors import DLFError

        raise DLFError(f"--devices {opts.devices} with --ray: Ray assigns the GPUs; use --gpus-per-run instead")
    return RaySearch.connect(opts.ray, plan.setup.storage, resolve_tracking_uri(opts.tracking_uri), opts.workers,
                             opts.threads, opts.gpus_per_run)


def _search_and_reevaluate(plan: TunePlan, opts: TuneOptions, study: Any, cluster: Any) -> tuple[list[str], list]:
    from dlf.tune.eval import reevaluate
    from dlf.tune.report import ProgressBoard
    from dlf.tune.search import run_search

    setup = plan.setup
    runtime, envs, warning = _workers(opts)
    with ProgressBoard(setup.trials, setup.objectives[0], enabled=opts.progress) as board:
        if len(setup.objectives) > 1:
            board.note(f"multi-objective search over {', '.join(setup.objectives)}: pruning is OFF (Optuna "
                       "cannot prune on several objectives); the Pareto front is reported at the end")
        if cluster is not None:
            board.note(cluster.describe())
        elif warning:
            board.note(f"warning: {warning}")
        board.update(study)
        if cluster is not None:
            errors = cluster.run(setup, board.update)
        else:
            errors = run_search(setup, runtime, envs, board.update)
        if errors:
            return errors, []
        return [], reevaluate(study, setup, plan.configs, plan.top_k, runtime, plan.code_version, board.note)


def _conclude(plan: TunePlan, opts: TuneOptions, study: Any, candidates: list,
              errors: list[str]) -> tuple[Path | None, list[Path], list[str]]:
    """Export the winner, save the plots, close the parent run with a summary and the files."""
    from dlf.tune.eval import export_winner
    from dlf.tune.report import save_plots, study_counts
    from dlf.tune.track import close_parent

    setup, export = plan.setup, None
    plots, notes = save_plots(study, setup.objectives, plan.export.with_suffix("")) if opts.plots else ([], [])
    counts = study_counts(study)
    summary = {"trials_finished": counts["finished"], "trials_pruned": counts["PRUNED"]}
    if candidates:
        export = export_winner(plan.export, candidates[0], setup, _provenance(plan, opts, study))
        summary.update(winner_trial=candidates[0].trial, winner_mean=candidates[0].mean, winner_std=candidates[0].std)
    elif not errors:
        notes.append("no trial completed (all pruned or failed): nothing to re-evaluate or export")
    close_parent(setup.tracking_uri, setup.parent_run_id, summary, plots + ([export] if export else []), not errors)
    return export, plots, notes


def _workers(opts: TuneOptions) -> tuple[Any, list[dict[str, str]], str | None]:
    """(runtime, per-worker environments, oversubscription warning) by the same rules as ``run``."""
    from dlf.run.local import cpu_cores, parse_devices, thread_budget, worker_envs
    from dlf.train.loop import Runtime

    devices = parse_devices(opts.devices)
    gpus = devices if devices and devices != ["cpu"] else None
    threads, warning = thread_budget(opts.workers, cpu_cores(), opts.threads)
    device = "cuda" if gpus else ("cpu" if devices == ["cpu"] else opts.device)
    if gpus and opts.workers == 1:  # trials run in this process: address the GPU directly
        device = f"cuda:{gpus[0]}"
    runtime = Runtime(device=device, threads=threads, progress=False)
    return runtime, worker_envs(opts.workers, gpus, threads), None if gpus else warning


def _attach_tracking(plan: TunePlan, opts: TuneOptions) -> Any:
    """Resolve the tracking URI, tag set, experiment and parent run (before any worker starts)."""
    from dlf.run.tracking import common_tags, resolve_tracking_uri
    from dlf.train.loop import resolve_device
    from dlf.tune.track import open_parent, tune_tags

    uri = resolve_tracking_uri(opts.tracking_uri)
    tags = tune_tags(common_tags(plan.spec), str(resolve_device(opts.device)), opts.threads)
    tags.update({"dlf.code_version": plan.code_version, "dlf.data_fingerprint": plan.data_fingerprint})
    setup = dataclasses.replace(plan.setup, tracking_uri=uri, tags=tags)
    extra = {"dlf.storage": setup.storage, "dlf.objective": ",".join(setup.objectives), "dlf.pruner": setup.pruner}
    exp, parent = open_parent(uri, setup, extra)
    return dataclasses.replace(setup, experiment_id=exp, parent_run_id=parent)


def _provenance(plan: TunePlan, opts: TuneOptions, study: Any) -> dict[str, Any]:
    from dlf.tune.report import study_counts

    return {"study_file": str(plan.study_file), "seeds": list(plan.seeds), "top_k": plan.top_k,
            "trials_finished": study_counts(study)["finished"], "tuned_with_set": dict(opts.set_overrides),
            "code_version": plan.code_version, "data_fingerprint": plan.data_fingerprint}
