"""Robustness of a study's trained models: test metrics with a modality dropped or under Gaussian noise.

Every finished seed run's checkpoint is evaluated on the test split (the same batches as the trainer's
test evaluation, so the clean row is the run's own tracked test metrics) with, per listed modality,

- ``drop``: every value of that modality's input set to 0;
- ``noise`` of strength s: x + s * std_d * e at every step that is not padding (a step whose features
  are all 0 stays 0), std_d the training split's std of feature dimension d over its non-padding steps,
  e ~ N(0, 1) drawn per sample from numpy's generator seeded by (--seed, modality, s, sample index): the
  same draw for every run, so methods are compared on the same corrupted inputs. s = 0 is the clean input.

Results go to MLflow as a nested run under each seed run (``dlf.level=robustness``, one per noise seed,
metrics ``robust/clean/<m>``, ``robust/<modality>/drop/<m>``, ``robust/<modality>/noise<s>/<m>``); a
condition already tracked there is read back, not evaluated again. Tables, scores and curves:
``dlf.analysis.robust_scores``.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from dlf.analysis.runs import Loader, RunRef, finished_runs
from dlf.errors import DLFError

__all__ = ["RobustnessOptions", "RobustnessResult", "run_robustness", "noise_scale", "perturb", "metric_name"]

MODALITIES = ("l", "a", "v")
FIELDS = {"l": "text", "a": "audio", "v": "vision"}
LEVEL = "robustness"
METRICS = ("acc7", "acc5", "acc2", "f1", "acc2_has0", "f1_has0", "corr", "mae")  # dlf.metrics.msa_metrics keys


@dataclass(frozen=True)
class RobustnessOptions:
    study: str
    out: Path
    modalities: str | Sequence[str] = "l,a,v"  # comma-separated or a sequence
    noise: str | Sequence[float] = "0,0.25,0.5,1.0"
    drop: bool = False
    seed: int = 0  # the noise generator's seed
    tracking_uri: str | None = None
    metric: str = "acc2"  # the curve the robustness scores read
    ddof: int = 1
    device: str = "cpu"
    data_root: Path | None = None


@dataclass
class RobustnessResult:
    study: str
    rows: Any  # pandas DataFrame: one row per (run, condition), metrics as msa_metrics gives them
    written: list[Path] = field(default_factory=list)
    reused: int = 0  # conditions read back from MLflow instead of evaluated


def run_robustness(opts: RobustnessOptions, say: Callable[[str], None] = lambda _m: None) -> RobustnessResult:
    """Evaluate, track, and write tables, scores and curves into ``opts.out``. Bad input is refused in
    one line before anything is evaluated or written; every run is evaluated before anything is tracked."""
    import pandas as pd

    from dlf.analysis.robust_scores import write_outputs
    from dlf.run.tracking import resolve_tracking_uri

    mods, levels = _check(opts)
    uri = resolve_tracking_uri(opts.tracking_uri)
    name, runs, _ = finished_runs(uri, opts.study)
    results, reused = [], 0
    with Loader(uri, opts.device, opts.data_root) as loader:
        for run in runs:
            say(f"robustness: {run.title}")
            known = _tracked(loader.client, run, opts.seed)
            todo = [c for c in _conditions(mods, levels, opts.drop) if metric_name(c, "mae") not in known]
            reused += len(_conditions(mods, levels, opts.drop)) - len(todo)
            fresh = _evaluate_run(loader, run, todo, opts.seed) if todo else {}
            results.append((run, known, fresh))
        rows = []
        for run, known, fresh in results:
            if fresh:
                _track(loader.client, run, opts.seed, fresh)
            rows += _rows(run, {**_from_tracked(known), **fresh}, mods, levels, opts.drop)
    frame = pd.DataFrame(rows)
    written = write_outputs(frame, name, Path(opts.out), levels, opts.metric, opts.ddof, opts.seed)
    return RobustnessResult(name, frame, written, reused)


def _check(opts: RobustnessOptions) -> tuple[tuple[str, ...], tuple[float, ...]]:
    raw = opts.modalities.split(",") if isinstance(opts.modalities, str) else list(opts.modalities)
    mods = tuple(dict.fromkeys(m.strip().lower() for m in raw if m.strip()))
    bad = [m for m in mods if m not in MODALITIES]
    if bad or not mods:
        raise DLFError(f"--modality {','.join(raw)}: unknown modality {', '.join(bad) or '(none)'}; "
                       "give a comma-separated subset of l,a,v")
    levels = []
    for item in opts.noise.split(",") if isinstance(opts.noise, str) else opts.noise:
        try:
            value = float(item)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise DLFError(f"--noise {item!r}: a noise strength is a finite number >= 0 (a multiple of the "
                           "training std), e.g. --noise 0,0.25,0.5,1.0")
        levels.append(value)
    if opts.metric not in METRICS:
        raise DLFError(f"--metric {opts.metric!r}: not a metric; use acc2, f1, acc7, acc5, corr or mae")
    _check_out(Path(opts.out))
    return mods, tuple(sorted(set(levels) | {0.0}))


def _check_out(out: Path) -> None:
    folder = out
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if folder == out and not out.is_dir():
        raise DLFError(f"--out {out}: is a file; give a folder")
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise DLFError(f"--out {out}: {folder} is not a writable folder; choose another path")


def _conditions(mods, levels, drop: bool) -> list[tuple]:
    """('clean',), ('drop', m), ('noise', m, s) for s > 0 (s = 0 is the clean row)."""
    out = [("clean",)]
    for m in mods:
        out += ([("drop", m)] if drop else []) + [("noise", m, s) for s in levels if s > 0]
    return out


def metric_name(cond: tuple, metric: str) -> str:
    if cond[0] == "clean":
        return f"robust/clean/{metric}"
    if cond[0] == "drop":
        return f"robust/{cond[1]}/drop/{metric}"
    return f"robust/{cond[1]}/noise{cond[2]:g}/{metric}"


def noise_scale(split: Any, modality: str) -> np.ndarray:
    """(D,) std of each feature dimension over the non-padding steps of ``split`` (training)."""
    x = np.asarray(getattr(split, FIELDS[modality]), dtype=np.float64)
    steps = x.reshape(-1, x.shape[-1])
    steps = steps[np.any(steps != 0, axis=1)]
    return steps.std(axis=0) if len(steps) else np.zeros(x.shape[-1])


def perturb(x: np.ndarray, cond: tuple, scale: np.ndarray, seed: int) -> np.ndarray:
    """The modality's (N, T, D) input under ``cond`` ('drop', m) or ('noise', m, s); see the module doc."""
    if cond[0] == "drop":
        return np.zeros_like(x)
    m, s = cond[1], cond[2]
    out = np.array(x, dtype=np.float32, copy=True)
    if s == 0:
        return out
    level = int(round(s * 1_000_000))
    for i in range(out.shape[0]):
        rng = np.random.default_rng([seed, MODALITIES.index(m), level, i])
        valid = np.any(out[i] != 0, axis=-1)  # (T,) padding steps stay 0
        e = rng.standard_normal(out.shape[1:], dtype=np.float32)
        out[i] += np.where(valid[:, None], (s * scale).astype(np.float32) * e, np.float32(0))
    return out


def _evaluate_run(loader: Loader, run: RunRef, todo: list[tuple], seed: int) -> dict[tuple, dict]:
    import torch

    from dlf.train.evaluation import SplitTensors, evaluate

    model, cfg, ds = loader.model(run)
    if cfg.model.text_encoder != "features" and any(c[0] != "clean" and c[1] == "l" for c in todo):
        raise DLFError(f"{run.title}: model.text_encoder={cfg.model.text_encoder} reads BERT token ids, on which "
                       "drop and noise are not defined; leave l out of --modality")
    device = next(model.parameters()).device
    clean = SplitTensors.from_split(ds.splits["test"], cfg.model.text_encoder, device)
    out, scales = {}, {}
    for cond in todo:
        data = clean
        if cond[0] != "clean":
            if cond[1] not in scales:
                scales[cond[1]] = noise_scale(ds.splits["train"], cond[1])
            scale = scales[cond[1]]
            x = getattr(clean, FIELDS[cond[1]]).cpu().numpy()
            changed = torch.as_tensor(perturb(x, cond, scale, seed), device=device)
            data = SplitTensors(**{**{k: getattr(clean, k) for k in ("text", "audio", "vision", "labels")},
                                   FIELDS[cond[1]]: changed})
        with warnings.catch_warnings():  # a constant prediction under a dropped modality: Corr is NaN, said in docs
            warnings.simplefilter("ignore", RuntimeWarning)
            out[cond] = evaluate(model, data, cfg.train.eval_batch_size)[1]
    return out


def _tracked(client, run: RunRef, seed: int) -> dict[str, float]:
    """The metrics of this run's robustness run for noise seed ``seed`` (empty when there is none)."""
    found = _robustness_run(client, run, seed)
    return dict(found.data.metrics) if found is not None else {}


def _robustness_run(client, run: RunRef, seed: int):
    query = (f"tags.`dlf.level` = '{LEVEL}' and tags.`mlflow.parentRunId` = '{run.run_id}' "
             f"and tags.`dlf.robustness.seed` = '{seed}'")
    parent = client.get_run(run.run_id)
    found = client.search_runs([parent.info.experiment_id], filter_string=query, max_results=5)
    return found[0] if found else None


def _track(client, run: RunRef, seed: int, fresh: dict[tuple, dict]) -> None:
    import time

    from mlflow.entities import Metric

    found = _robustness_run(client, run, seed)
    if found is None:
        parent = client.get_run(run.run_id)
        tags = {k: v for k, v in parent.data.tags.items() if k.startswith("dlf.") and k != "dlf.level"}
        tags |= {"dlf.level": LEVEL, "mlflow.parentRunId": run.run_id, "dlf.robustness.seed": str(seed)}
        found = client.create_run(parent.info.experiment_id, tags=tags,
                                  run_name=f"{run.title} robustness seed {seed}")
    rid, now = found.info.run_id, int(time.time() * 1000)
    metrics = [Metric(metric_name(c, k), float(v), now, 0) for c, values in fresh.items() for k, v in values.items()]
    for i in range(0, len(metrics), 1000):
        client.log_batch(rid, metrics=metrics[i:i + 1000])
    client.set_terminated(rid, "FINISHED")


def _from_tracked(known: dict[str, float]) -> dict[tuple, dict]:
    out: dict[tuple, dict] = {}
    for name, value in known.items():
        parts = name.split("/")
        if parts[1] == "clean":
            cond = ("clean",)
        elif parts[2] == "drop":
            cond = ("drop", parts[1])
        else:
            cond = ("noise", parts[1], float(parts[2][len("noise"):]))
        out.setdefault(cond, {})[parts[-1]] = value
    return out


def _rows(run: RunRef, results: dict[tuple, dict], mods, levels, drop: bool) -> list[dict]:
    meta = {"study": run.study, "dataset": run.dataset, "corpus": run.corpus, "synthetic": run.synthetic,
            "variant": run.variant, "label": run.label, "order": run.order, "seed": run.seed, "run_id": run.run_id}
    rows = [{**meta, "modality": "-", "condition": "clean", "noise": 0.0, **results[("clean",)]}]
    for m in mods:
        if drop:
            rows.append({**meta, "modality": m, "condition": "drop", "noise": math.nan, **results[("drop", m)]})
        for s in levels:
            key = ("clean",) if s == 0 else ("noise", m, s)
            rows.append({**meta, "modality": m, "condition": "noise", "noise": s, **results[key]})
    return rows
