"""``dlf-ablate plan``: which runs of a study are cached, and roughly what the rest will cost.

Cost per pending run, in order of preference:
- measured: the mean ``train_seconds`` of FINISHED runs of the same variant on the same dataset;
- estimate: parameters (outside the text encoder) x training samples x epochs x a rate in seconds
  per (parameter x sample x epoch). The epochs are ``train.max_epochs``, or :data:`PATIENCE_FACTOR`
  x ``train.patience`` when that is fewer: the MMSA recipes set no epoch cap (1000) and let early
  stopping end a run. The rate is calibrated on this study's finished runs when there are any, else
  it is :data:`CPU_RATE`, measured once on a 2-core laptop CPU in ``features`` text mode.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

# Seconds per (parameter x training sample x epoch): full DLF (1.63 M parameters), synthetic-MOSI at
# scale 0.1, one CPU thread, features text mode, validation included (8.6 s CPU for 3 epochs).
CPU_RATE = 1.4e-8
# Epochs an early-stopped run is assumed to take, per epoch of patience (DLF's official runs on MOSI
# stop after 30-60 epochs with patience 10; MMSA's after 20-40 with patience 8).
PATIENCE_FACTOR = 5


@dataclass
class PlanRow:
    spec: object
    cached: bool
    seconds: float | None  # estimated training seconds (None: cached or unknown)
    source: str


def plan_rows(specs: list, tracking_uri: str) -> tuple[list[PlanRow], float, str]:
    """(rows, total estimated seconds of the pending runs, how the costs were obtained)."""
    finished = _finished_runs(specs, tracking_uri)
    units = {s.key: _work_units(s) for s in specs}
    measured = _measured(finished.values())
    rate, rate_source = _rate(specs, finished, units)
    rows, total = [], 0.0
    for spec in specs:
        if spec.key in finished:
            rows.append(PlanRow(spec, True, None, "finished"))
            continue
        same = measured.get((spec.variant, spec.dataset))
        if same:
            # Same max_epochs: the measured time (early stopping included); else per epoch x epochs.
            mean = statistics.fmean(t if m == spec.config.train.max_epochs else t / e * _epochs(spec.config)
                                    for t, e, m in same)
            row = PlanRow(spec, False, mean, f"measured ({len(same)} runs)")
        elif units[spec.key]:
            row = PlanRow(spec, False, units[spec.key] * rate, "estimate")
        else:
            row = PlanRow(spec, False, None, "unknown")
        total += row.seconds or 0.0
        rows.append(row)
    kinds = {r.source.split(" ")[0] for r in rows if not r.cached}
    parts = ["measured: finished runs of the same variant"] if "measured" in kinds else []
    if "estimate" in kinds:
        parts.append(f"estimate: params x samples x epochs (max_epochs, at most {PATIENCE_FACTOR} x patience) "
                     f"at the {rate_source}")
    return rows, total, "; ".join(parts) or "nothing pending"


def _measured(runs) -> dict[tuple[str, str], list[tuple[float, float, int]]]:
    """(variant, dataset) -> [(train_seconds, epochs run, max_epochs)] over every finished run."""
    out: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
    for run in runs:
        m = run.data.metrics
        try:
            item = (m["train_seconds"], m["epochs"], int(run.data.params["train.max_epochs"]))
        except (KeyError, ValueError):
            continue
        out.setdefault((run.data.tags.get("dlf.variant"), run.data.tags.get("dlf.dataset")), []).append(item)
    return out


def _rate(specs: list, finished: dict, units: dict) -> tuple[float, str]:
    """Seconds per (parameter x sample x epoch): calibrated on this expansion's finished keys."""
    rates = []
    for spec in specs:  # the rate needs the run's config: only keys of this expansion
        run = finished.get(spec.key)
        seconds = run.data.metrics.get("train_seconds") if run else None
        if seconds is not None and units[spec.key]:
            epochs = run.data.metrics.get("epochs") or _epochs(spec.config)
            rates.append(seconds / (units[spec.key] * epochs / _epochs(spec.config)))
    if rates:
        return statistics.median(rates), f"rate from {len(rates)} finished runs"
    return CPU_RATE, "CPU rate of a 2-core laptop"


def _finished_runs(specs: list, uri: str) -> dict:
    """key -> FINISHED run, without creating a store that does not exist yet (plan is a dry run)."""
    from dlf.run import tracking
    from dlf.run.store_file import sqlite_path

    db = sqlite_path(uri)
    if not specs or (db is not None and (not db.is_file() or db.stat().st_size == 0)):
        return {}
    c = tracking.client(uri)
    exp = c.get_experiment_by_name(specs[0].study)
    return tracking.finished_keys(c, exp.experiment_id) if exp is not None else {}


_PARAMS: dict[tuple, int | None] = {}


def _work_units(spec) -> float | None:
    """parameters x training samples x epochs of one run, or None if the model cannot be built."""
    from dlf.data.synthetic import SPLIT_SIZES, split_sizes

    cfg = spec.config
    n_train = split_sizes(spec.corpus, cfg.data.scale)[0] if spec.synthetic else SPLIT_SIZES[spec.corpus][0]
    ident = (spec.corpus, cfg.model)
    if ident not in _PARAMS:
        _PARAMS[ident] = _parameters(spec)
    params = _PARAMS[ident]
    return None if params is None else float(params) * n_train * _epochs(cfg)


def _epochs(cfg) -> int:
    t = cfg.train
    return min(t.max_epochs, PATIENCE_FACTOR * t.patience) if t.patience else t.max_epochs


def _parameters(spec) -> int | None:
    from dlf.study.catalogue import REFERENCE_SHAPES
    from dlf.config import apply_overrides
    from dlf.models.registry import build_model, family_of

    try:
        cfg = apply_overrides(spec.config, {"model.text_encoder": "features"}, source="plan")
        dims, seq_lens = REFERENCE_SHAPES[spec.corpus]
        family = family_of(cfg)
        return family.summary(build_model(cfg, dims, seq_lens))["total"]
    except Exception:  # noqa: BLE001 - an estimate is optional; the plan still lists the run
        return None
