"""Collect: the tracked seed runs of MLflow -> one tidy row per (study, variant, dataset, seed).

The only module of the report that talks to MLflow. It follows the tracking layout of
docs/contracts.md: experiment = study, child runs tagged ``dlf.level=seed`` carry the ``dlf.*``
tags and the final ``val_*``/``test_*`` metrics; ``predictions/test.csv`` holds test predictions.
It also lists the expected runs that are missing, failed or still running.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from dlf.errors import DLFError
from dlf.run.store_file import sqlite_path, store_error

META_COLUMNS = ["study", "variant", "dataset", "corpus", "synthetic", "group", "label", "latex",
                "order", "seed", "run_key", "status", "run_id", "start_time"]
PRED_COLUMNS = ["study", "variant", "dataset", "seed", "run_id", "id", "label", "pred"]
PROBLEM_COLUMNS = ["study", "variant", "dataset", "seed", "status", "run_id"]
_NO_GROUP = {"", "none", "null"}


@dataclass
class Collected:
    """What the store holds for the requested studies."""

    runs: pd.DataFrame  # META_COLUMNS + val_*/test_* metrics; the chosen run of every slot
    problems: pd.DataFrame  # PROBLEM_COLUMNS: status 'missing' | 'failed' | 'killed' | 'running'
    predictions: pd.DataFrame  # PRED_COLUMNS, finished runs of the variants asked for
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (study, message)

    @property
    def finished(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "FINISHED"].reset_index(drop=True)


def collect(tracking_uri: str, studies: Iterable[str] | None = None,
            expected: dict[str, list[tuple[str, str, int]]] | None = None,
            predictions_for: Iterable[str] | None = None) -> Collected:
    """Read the seed runs of ``studies`` (all studies in the store when None).

    ``expected`` maps a study name to the (variant, dataset, seed) slots its YAML expands to; a
    study without an entry is checked against its own parent runs (every parent x every seed seen).
    Test predictions are read for the finished runs of ``predictions_for`` (default: the
    ungrouped variants, i.e. the full model).
    """
    client = _client(tracking_uri)
    wanted = list(studies) if studies else None
    try:
        rows, parents = _read_runs(client, wanted)
    except Exception as err:  # noqa: BLE001 - a store that fails mid-read (damaged pages, a lost server)
        raise store_error(tracking_uri, err) from None
    runs = _choose(_frame(rows))
    names = wanted or sorted(parents)
    problems = _problems(runs, names, expected or {}, parents)
    if predictions_for is None:
        predictions_for = set(runs.loc[runs["group"].isna(), "variant"]) if not runs.empty else set()
    preds, warnings = _predictions(client, runs, set(predictions_for))
    return Collected(runs, problems, preds, warnings)


def _read_runs(client, wanted: list[str] | None) -> tuple[list[dict], dict]:
    rows, parents = [], {}
    for exp in _experiments(client, wanted):
        rows += [_seed_row(r, exp.name) for r in _search(client, exp.experiment_id, "seed")]
        parents[exp.name] = {(r.data.tags.get("dlf.variant"), r.data.tags.get("dlf.dataset"))
                             for r in _search(client, exp.experiment_id, "parent")}
    return rows, parents


def _frame(rows: list[dict]) -> pd.DataFrame:
    """Tidy rows with a stable column order: metadata, then val_*, then test_* (sorted)."""
    metrics = sorted({k for r in rows for k in r if k not in META_COLUMNS},
                     key=lambda k: (not k.startswith("val_"), k))
    return pd.DataFrame(rows, columns=META_COLUMNS + metrics)


def _client(uri: str):
    """The tracking module's client (its checks of the store, one line per problem), never
    creating a store: reading one that is not there is an error, not a new empty store."""
    from dlf.run import tracking

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    path = sqlite_path(uri)
    if path is not None and (not path.is_file() or path.stat().st_size == 0):
        what = "an empty file, " if path.is_file() else ""
        raise DLFError(f"{path}: {what}no MLflow store there (tracking URI {uri}); run `dlf-ablate run` "
                       "first or pass --tracking-uri")
    return tracking.client(uri)


def _experiments(client, wanted: list[str] | None) -> list:
    found = list(_paged(lambda token: client.search_experiments(page_token=token)))
    if wanted is None:
        return [e for e in found if e.name != "Default"]
    return [e for e in found if e.name in set(wanted)]


def _search(client, experiment_id: str, level: str) -> list:
    query = f"tags.`dlf.level` = '{level}'"
    return list(_paged(lambda token: client.search_runs(
        [experiment_id], filter_string=query, max_results=1000, page_token=token)))


def _paged(fetch):
    token = None
    while True:
        page = fetch(token)
        yield from page
        token = page.token
        if not token:
            return


def _seed_row(run, experiment: str) -> dict:
    tags = run.data.tags
    variant = tags.get("dlf.variant", "?")
    label = tags.get("dlf.label") or variant
    group = tags.get("dlf.group") or ""
    row = {
        "study": tags.get("dlf.study") or experiment, "variant": variant,
        "dataset": tags.get("dlf.dataset", "?"),
        "corpus": tags.get("dlf.corpus", tags.get("dlf.family", "")),  # runs tracked before: dlf.family
        "synthetic": tags.get("dlf.synthetic", "false").strip().lower() == "true",
        "group": None if group.strip().lower() in _NO_GROUP else group,
        "label": label, "latex": tags.get("dlf.latex") or None,
        "order": _int(tags.get("dlf.order"), 10**6), "seed": _int(tags.get("dlf.seed"), -1),
        "run_key": tags.get("dlf.run_key", ""), "status": run.info.status,
        "run_id": run.info.run_id, "start_time": run.info.start_time or 0,
    }
    row.update({k: float(v) for k, v in run.data.metrics.items() if k.startswith(("val_", "test_"))})
    return row


def _int(value, default: int) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return default


def _choose(runs: pd.DataFrame) -> pd.DataFrame:
    """One run per slot: a FINISHED one if any (the newest), else the newest attempt."""
    if runs.empty:
        return runs
    ranked = runs.assign(_done=runs["status"] == "FINISHED")
    ranked = ranked.sort_values(["_done", "start_time"], ascending=False, kind="stable")
    chosen = ranked.drop_duplicates(["study", "variant", "dataset", "seed"]).drop(columns="_done")
    return chosen.sort_values(["study", "dataset", "order", "variant", "seed"]).reset_index(drop=True)


def _problems(runs: pd.DataFrame, studies: list[str], expected: dict, parents: dict) -> pd.DataFrame:
    out = []
    for study in studies:
        mine = runs[runs["study"] == study] if not runs.empty else runs
        have = {(r.variant, r.dataset, r.seed): r for r in mine.itertuples()}
        slots = expected.get(study)
        if slots is None:  # no YAML: every parent (variant, dataset) x every seed seen
            pairs = parents.get(study, set()) | {(v, d) for v, d, _ in have}
            seeds = sorted({s for _, _, s in have})
            slots = [(v, d, s) for v, d in sorted(pairs) for s in seeds]
        for slot in list(dict.fromkeys(slots)) + sorted(set(have) - set(slots)):
            run = have.get(slot)
            if run is None:
                out.append((study, *slot, "missing", None))
            elif run.status != "FINISHED":
                out.append((study, *slot, run.status.lower(), run.run_id))
    return pd.DataFrame(out, columns=PROBLEM_COLUMNS)


def _predictions(client, runs: pd.DataFrame, variants: set[str]) -> tuple[pd.DataFrame, list]:
    frames, unreadable = [], {}
    if runs.empty:
        return pd.DataFrame(columns=PRED_COLUMNS), []
    todo = runs[(runs["status"] == "FINISHED") & runs["variant"].isin(variants)]
    with tempfile.TemporaryDirectory(prefix="dlf-report-") as tmp:
        for run in todo.itertuples():
            try:
                path = client.download_artifacts(run.run_id, "predictions/test.csv",
                                                 os.path.join(tmp, run.run_id))
                preds = pd.read_csv(path, dtype={"id": str})[["id", "label", "pred"]]
            except Exception:  # a missing or broken artifact must not sink the report
                unreadable.setdefault(run.study, []).append(f"{run.variant}@{run.dataset}#{run.seed}")
                continue
            meta = dict(study=run.study, variant=run.variant, dataset=run.dataset,
                        seed=run.seed, run_id=run.run_id)
            frames.append(preds.assign(**meta)[PRED_COLUMNS])
    warnings = [(study, f"no readable predictions/test.csv in {len(names)} run(s) ({', '.join(names[:4])}"
                        f"{', ...' if len(names) > 4 else ''}): left out of the confusion matrix")
                for study, names in unreadable.items()]
    if not frames:
        return pd.DataFrame(columns=PRED_COLUMNS), warnings
    return pd.concat(frames, ignore_index=True), warnings


def study_slots(arg: str) -> tuple[str, list[tuple[str, str, int]] | None]:
    """A STUDY argument -> (study name, expected (variant, dataset, seed) slots or None).

    A YAML path or a built-in study name is read with ``dlf.study.file.load_study``; any other name is
    taken as an experiment in the store, checked against its own parent runs.
    """
    from dlf.study.spec import load_study

    is_file = arg.endswith((".yaml", ".yml")) or os.sep in arg
    if is_file and not Path(arg).is_file():
        raise DLFError(f"{arg}: no such study file; pass a study YAML or a study name")
    try:
        spec = load_study(arg)
    except DLFError:
        if is_file:
            raise
        return arg, None  # not a built-in study: an experiment name in the store
    return spec.name, [(v, d, int(s)) for v in spec.variants for d in spec.datasets for s in spec.seeds]
