"""``tune``: Optuna search over loss weights on validation metrics (see ``dlf.tune``)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dlf.cli.options import DataRootOpt, DeviceOpt, DevicesOpt, SetFileOpt, SetOpt, TrackingUriOpt
from dlf.errors import DLFError


def register(app: typer.Typer) -> None:
    app.command("tune")(tune)


def tune(
    study: str = typer.Argument("tune", help="Study YAML path or built-in name; its `tune:` mapping sets defaults."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="mosi, mosei, synthetic-mosi, ... or a pickle path "
                                          "(default: the study's first dataset)."),
    variant: Optional[str] = typer.Option(None, "--variant", help="Variant of the study to tune (default: full)."),
    trials: Optional[int] = typer.Option(None, "--trials", help="TOTAL finished (complete or pruned) trials; "
                                         "rerunning tops the study up to this number."),
    space: Optional[Path] = typer.Option(None, "--space", help="YAML search space: dot-path -> {low, high, log} "
                                         "or {choices: [...]} (default: the nine loss weights, log-uniform)."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Journal file path, or an RDB URL "
                                          "(sqlite:///..., postgresql://...) for a cluster. Default: "
                                          "$DLF_HOME/tune/<study-name>.journal."),
    study_name: Optional[str] = typer.Option(None, "--study-name", help="Optuna study name "
                                             "(default: <study>-<variant>@<dataset>)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes on the same storage (Ray tasks "
                                "with --ray)."),
    devices: DevicesOpt = None,
    device: DeviceOpt = "auto",
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Torch threads per worker "
                                          "(default: max(1, cores // workers))."),
    pruner: Optional[str] = typer.Option(None, "--pruner", help="median, hyperband or none (default: the study's, "
                                         "else median)."),
    objective: Optional[str] = typer.Option(None, "--objective", help="Validation metric: val_mae/val_loss "
                                            "(minimised), val_acc2, val_f1, val_corr, val_acc7, val_acc5 (maximised)."),
    multi_objective: Optional[str] = typer.Option(None, "--multi-objective", help="Comma-separated validation "
                                                  "metrics, e.g. val_mae,val_acc2: Pareto search, pruning off."),
    top_k: Optional[int] = typer.Option(None, "--top-k", min=1, help="Best trials re-run over --seeds (default 3)."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds; the first one is the search "
                                        "seed (default: the study's seeds)."),
    export: Optional[Path] = typer.Option(None, "--export", help="Where the winner's overrides YAML goes "
                                          "(default: next to the journal, <study-name>.best.yaml)."),
    tracking_uri: TrackingUriOpt = None,
    set_: SetOpt = None,
    set_file: SetFileOpt = None,
    data_root: DataRootOpt = None,
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar (logs, CI)."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Skip the importance/history/Pareto PNGs."),
    ray: Optional[str] = typer.Option(None, "--ray", help="Run the --workers as tasks on a Ray cluster: auto, local, "
                                      "HOST:PORT or ray://HOST:10001; give a PostgreSQL --storage across nodes."),
    gpus_per_run: Optional[float] = typer.Option(None, "--gpus-per-run", help="With --ray: GPUs per worker; a "
                                                 "fraction packs several on one GPU (default 0: CPU)."),
) -> None:
    """Search loss weights with Optuna on VALIDATION metrics; resumable, tracked, exported for `run`."""
    import dlf.train.loop  # noqa: F401 - torch and optuna, which trials need, imported before the collector
    import dlf.tune.search  # noqa: F401 - settles (dlf.startup)
    from dlf.config import parse_set_options
    from dlf.startup import settle_gc
    from dlf.tune import TuneOptions, tune as run_tune

    settle_gc()
    opts = TuneOptions(
        study=study, dataset=dataset, variant=variant, trials=trials, space=str(space) if space else None,
        storage=storage, study_name=study_name, workers=workers, devices=devices, pruner=pruner,
        objective=objective, multi_objective=_csv(multi_objective, "--multi-objective"), top_k=top_k,
        seeds=_seeds(seeds), export=str(export) if export else None, tracking_uri=tracking_uri,
        set_overrides=parse_set_options(set_ or []), set_file=str(set_file) if set_file else None,
        data_root=str(data_root) if data_root else None, device=device, threads=threads,
        progress=not no_progress, plots=not no_plots, ray=ray, gpus_per_run=gpus_per_run,
    )
    result = run_tune(opts)
    _print(result)
    if result.errors:
        raise DLFError("; ".join(result.errors))


def _csv(text: Optional[str], flag: str) -> Optional[list[str]]:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise DLFError(f"{flag} {text!r}: give comma-separated names, e.g. {flag} val_mae,val_acc2")
    return items


def _seeds(text: Optional[str]) -> Optional[list[int]]:
    items = _csv(text, "--seeds")
    if items is None:
        return None
    from dlf.study.file import SEED_DOMAIN

    try:
        seeds = [int(s) for s in items]
    except ValueError:
        raise DLFError(f"--seeds {text!r}: expected comma-separated integers, e.g. --seeds 1111,1112,1113") from None
    for s in seeds:
        if not SEED_DOMAIN.contains(s):
            raise DLFError(f"--seeds {text!r}: {s} is out of range; expected {SEED_DOMAIN.describe(integer=True)}")
    return seeds


def _print(r) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=True)  # long paths stay on one line (logs, copy-paste)
    c = r.counts
    console.print(f"study {r.study_name!r} in {r.storage}: {c['finished']} finished "
                  f"({c['COMPLETE']} complete, {c['PRUNED']} pruned), {c['FAIL']} failed"
                  + (f"; {r.reaped} trial(s) of dead workers failed and re-queued" if r.reaped else ""))
    if not r.pruning:
        console.print("pruning: off" + (" (several objectives)" if len(r.objectives) > 1 else ""))
    if r.pareto:
        console.print(f"Pareto front ({', '.join(r.objectives)}): "
                      + "; ".join(f"trial {n}: {', '.join(f'{v:.4f}' for v in vals)}" for n, vals in r.pareto))
    if r.candidates:
        table = Table(title=f"top {len(r.candidates)} re-evaluated over seeds (validation {r.objectives[0]})")
        for col in ("trial", "mean", "std", "per seed"):
            table.add_column(col)
        for cand in r.candidates:
            seeds = ", ".join(f"{s}: {v:.4f}" for s, v in cand.per_seed.items())
            table.add_row(str(cand.trial), f"{cand.mean:.4f}", f"{cand.std:.4f}", seeds)
        console.print(table)
    if r.export:
        console.print(f"winner: trial {r.candidates[0].trial} -> {r.export}  (use: dlf-ablate run STUDY --set-file {r.export})")
    for note in r.notes:
        console.print(f"note: {note}")
    for path in r.plots:
        console.print(f"plot: {path}")
    console.print(f"dashboard: optuna-dashboard {r.storage}")
