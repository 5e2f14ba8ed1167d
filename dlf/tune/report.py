"""What a tuning study shows: rich progress over trials and Optuna's plots as PNG files."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState


def study_counts(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    count = {s.name: 0 for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)}
    for t in trials:
        if t.state.name in count:
            count[t.state.name] += 1
    count["finished"] = count["COMPLETE"] + count["PRUNED"]
    return count


def best_value(study: optuna.Study) -> str:
    """Best value so far as text ('-' before the first complete trial; the front size with several)."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return "-"
    if len(study.directions) > 1:
        return f"Pareto front of {len(study.best_trials)}"
    return f"{study.best_value:.4f} (trial {study.best_trial.number})"


class ProgressBoard:
    """Trial n/N, best value so far and pruned count, refreshed from the storage."""

    def __init__(self, total: int, objective: str, enabled: bool = True) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.enabled = enabled
        self.progress = Progress(TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), disable=not enabled)
        self.task = self.progress.add_task("trials", total=total, info="")
        self.objective = objective

    def __enter__(self) -> "ProgressBoard":
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def update(self, study: optuna.Study) -> None:
        c = study_counts(study)
        info = f"best {self.objective} {best_value(study)}  pruned {c['PRUNED']}  failed {c['FAIL']}"
        self.progress.update(self.task, completed=c["finished"], info=info)

    def note(self, text: str) -> None:
        self.progress.console.print(text)


def save_plots(study: optuna.Study, objectives: tuple[str, ...], prefix: Path) -> tuple[list[Path], list[str]]:
    """Parameter importance, optimisation history and (several objectives) Pareto front as PNGs.

    Returns (files written, notes for the plots that were skipped and why).
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window (workers, clusters, CI)
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    multi = len(objectives) > 1
    jobs = {"history": lambda: ovm.plot_optimization_history(study, target=_first(multi), target_name=objectives[0])}
    notes = []
    if len(complete) >= 2:
        jobs["importance"] = lambda: ovm.plot_param_importances(
            study, evaluator=_evaluator(), target=_first(multi), target_name=objectives[0])
    else:
        notes.append(f"parameter importance skipped: it needs >= 2 complete trials, the study has {len(complete)}")
    if multi:
        jobs["pareto"] = lambda: ovm.plot_pareto_front(study, target_names=list(objectives[:3]),
                                                       targets=None if len(objectives) <= 3 else lambda t: t.values[:3])
    files = []
    prefix.parent.mkdir(parents=True, exist_ok=True)
    for name, make in jobs.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna marks its matplotlib backend experimental
            try:
                ax = make()
            except (ValueError, RuntimeError, ImportError) as err:
                notes.append(f"{name} plot skipped: {err}")
                continue
        fig = getattr(ax, "figure", None) or ax.flat[0].figure
        path = prefix.parent / f"{prefix.name}.{name}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        files.append(path)
    return files, notes


def _first(multi: bool):
    return (lambda t: t.values[0]) if multi else None


def _evaluator():
    """fANOVA when scikit-learn is present (Optuna's default), else PED-ANOVA (no extra dependency)."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return optuna.importance.PedAnovaImportanceEvaluator()
    return optuna.importance.FanovaImportanceEvaluator(seed=0)


def dashboard_hint(storage: str) -> str:
    return f"optuna-dashboard {storage}"
