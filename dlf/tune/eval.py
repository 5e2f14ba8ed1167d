"""After the search: re-run the top-K trials over several seeds, pick the winner, export it.

Ranking and the winner use validation metrics only. Single objective: the K best COMPLETE trials
by value. Several objectives: the Pareto front, ordered by the first objective, cut to K; the
winner is the best mean of the first objective. A re-run whose (trial, seed) equals the search
run (the first seed) reuses the search trial's stored validation metrics instead of retraining.
Results are cached in the study's user attributes, so rerunning the command repeats nothing.
"""
from __future__ import annotations

import datetime as dt
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
import yaml

from dlf import interrupts
from dlf.config import apply_overrides
from dlf.errors import DLFError
from dlf.tune.worker import TuneSetup, selected_validation

REEVAL_ATTR = "dlf.reeval"  # study user attr prefix: dlf.reeval.<trial>.<seed> -> {code_version, val}


@dataclass
class Candidate:
    trial: int
    params: dict[str, Any]
    search_values: list[float]
    per_seed: dict[int, float] = field(default_factory=dict)  # seed -> first objective

    @property
    def mean(self) -> float:
        return statistics.fmean(self.per_seed.values())

    @property
    def std(self) -> float:
        return statistics.stdev(self.per_seed.values()) if len(self.per_seed) > 1 else 0.0


def top_trials(study: optuna.Study, setup: TuneSetup, k: int) -> list[optuna.trial.FrozenTrial]:
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    pool = study.best_trials if len(setup.objectives) > 1 else complete
    sign = 1 if setup.directions[0] == "minimize" else -1
    return sorted(pool, key=lambda t: (sign * t.values[0], t.number))[:k]


def reevaluate(study: optuna.Study, setup: TuneSetup, configs: dict[int, Any], k: int, runtime: Any,
               code_version: str, on_run: Callable[[str], None] | None = None) -> list[Candidate]:
    """Validation objective of the top-K trials for every seed, best mean first."""
    trials = top_trials(study, setup, k)
    if not trials:
        return []
    out, dataset, tracker = [], None, None
    for t in trials:
        cand = Candidate(trial=t.number, params=dict(t.params), search_values=list(t.values))
        for seed, base in configs.items():
            val = _cached(study, t, seed, setup, code_version)
            if val is None:
                if dataset is None:
                    dataset, tracker = _load(setup)
                if on_run is not None:
                    on_run(f"re-evaluating trial {t.number} with seed {seed}")
                val = _rerun(t, seed, base, dataset, tracker, runtime)
                study.set_user_attr(f"{REEVAL_ATTR}.{t.number}.{seed}", {"code_version": code_version, "val": val})
            cand.per_seed[seed] = val[setup.objectives[0]]
        out.append(cand)
    sign = 1 if setup.directions[0] == "minimize" else -1
    return sorted(out, key=lambda c: (sign * c.mean, c.trial))


def _cached(study: optuna.Study, t: optuna.trial.FrozenTrial, seed: int, setup: TuneSetup,
            code_version: str) -> dict[str, float] | None:
    if seed == setup.base.seed and "dlf.val" in t.user_attrs:
        return t.user_attrs["dlf.val"]  # the search run itself: same config, same seed
    hit = study.user_attrs.get(f"{REEVAL_ATTR}.{t.number}.{seed}")
    return hit["val"] if hit and hit.get("code_version") == code_version else None


def _load(setup: TuneSetup) -> tuple[Any, Any]:
    from dlf.data.mmsa import load_dataset
    from dlf.tune.track import TrialTracker

    dataset = load_dataset(setup.data_path, setup.base.data)
    return dataset, TrialTracker(setup, dataset)


def _rerun(t: optuna.trial.FrozenTrial, seed: int, base: Any, dataset: Any, tracker: Any,
           runtime: Any) -> dict[str, float]:
    from dlf.train.loop import train_run

    cfg = apply_overrides(base, t.params, source=f"trial {t.number} (seed {seed})")
    run_id, done = None, False
    try:  # as dlf.run.executor: Ctrl-C closes the MLflow run; it lands after its creation and completion
        with interrupts.held():
            run_id = tracker.start(t.number, t.params, seed=seed)
        result = train_run(cfg, dataset, runtime, on_epoch=lambda e, m: tracker.log_epoch(run_id, e, m))
        val = selected_validation(result)
        with interrupts.held():
            tracker.log_final(run_id, val, result.best_epoch, result.epochs, result.train_seconds)
            tracker.end(run_id, "COMPLETE")
            done = True
    except KeyboardInterrupt:
        if run_id is not None and not done:
            with interrupts.ignored():
                tracker.end(run_id, "FAIL", "interrupted (SIGINT/SIGTERM); rerun the command to finish")
        raise
    except Exception as err:
        if run_id is None or done:
            raise
        tracker.end(run_id, "FAIL", f"{type(err).__name__}: {err}")
        raise DLFError(f"re-evaluation of trial {t.number} with seed {seed} failed: {err}") from None
    return val


def export_winner(path: Path, winner: Candidate, setup: TuneSetup, plan_info: dict[str, Any]) -> Path:
    """Write the winner as an overrides file for ``run --set-file`` / a study's ``overrides_file:``."""
    provenance = {
        "study": setup.study, "optuna_study": setup.study_name, "storage": setup.storage,
        "trial": winner.trial, "objective": setup.objectives[0], "direction": setup.directions[0],
        "objectives": list(setup.objectives), "mean": winner.mean, "std": winner.std,
        "n_seeds": len(winner.per_seed), "per_seed": {int(s): v for s, v in winner.per_seed.items()},
        "search_values": winner.search_values, "dataset": setup.dataset, "variant": setup.variant,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **plan_info,
    }
    body = {"overrides": dict(winner.params), "provenance": provenance}
    header = ("# Written by `dlf-ablate tune`: the winning search values, chosen on validation metrics only.\n"
              f"# Use: dlf-ablate run STUDY --set-file {path.name}   (or `overrides_file: {path.name}` in a study)\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(header + yaml.safe_dump(body, sort_keys=False))
    tmp.replace(path)  # atomic: an interrupted export never leaves half a file
    return path
