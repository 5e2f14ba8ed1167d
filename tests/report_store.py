"""Test helper: write a real MLflow SQLite store laid out exactly as docs/contracts.md says the
study runner tracks runs, so the report can be tested without training anything.

It doubles as executable documentation of the tracking contract the report reads:

- experiment = study name;
- a parent run per (variant, dataset): run name ``<variant>@<dataset>``, tag ``dlf.level=parent``;
- a child run per seed: run name ``<variant>@<dataset>#<seed>``, tags ``dlf.level=seed`` and
  ``mlflow.parentRunId``;
- tags on both: dlf.study, dlf.variant, dlf.dataset, dlf.corpus, dlf.synthetic ('true'/'false'),
  dlf.group, dlf.label, dlf.latex, dlf.order; on seed runs also dlf.seed, dlf.run_key,
  dlf.code_version, dlf.data_fingerprint, dlf.env.{torch,cuda,device,python,host};
- seed-run metrics: per epoch (step = epoch, from 1) train_loss, val_loss, val_<metric>; then the
  final val_<metric>/test_<metric> of the selected epoch, best_epoch, epochs, train_seconds,
  logged last at step = epochs so that they are each name's latest value;
- params: the flattened config; artifacts config.json, environment.json, predictions/test.csv
  (id,label,pred); status FINISHED when done.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

METRIC_NAMES = ("acc7", "acc5", "acc2", "f1", "acc2_has0", "f1_has0", "corr", "mae")


@dataclass
class Variant:
    name: str
    group: str | None
    label: str
    latex: str
    order: int


CATALOGUE = {v.name: v for v in [
    Variant("full", None, "DLF (Ours)", "DLF (Ours)", 0),
    Variant("only_a", "Different Modalities", "only A", "only $A$", 10),
    Variant("l_and_v", "Different Modalities", "L & V", "$L$ \\& $V$", 14),
    Variant("wo_lr", "Different Regularization", "w/o L_r", "w/o $\\mathcal{L}_r$", 20),
    Variant("wo_lfa", "Different Components", "w/o LFA", "w/o LFA", 31),
    Variant("wo_ld", "Extras", "w/o L_d", "w/o $\\mathcal{L}_d$", 100),
]}


@dataclass
class Slot:
    """What one seed run should look like in the store."""

    metrics: dict[str, float]  # test metrics, fractions for accuracies (as msa_metrics returns)
    status: str = "FINISHED"  # FINISHED | FAILED | RUNNING | KILLED
    predictions: list[tuple[str, float, float]] | None = None  # (id, label, pred)
    extra_tags: dict[str, str] = field(default_factory=dict)


def store_uri(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


def log_study(uri: str, study: str, datasets: dict[str, tuple[str, bool]],
              slots: dict[tuple[str, str, int], Slot | None], artifact_root: Path,
              epochs: int = 3) -> dict[tuple[str, str, int], str]:
    """Log ``slots`` ((variant, dataset, seed) -> Slot; None = parent only, run never started).

    ``datasets`` maps the dataset spec to (corpus, synthetic). Calling it again for the same study
    adds new attempts under the existing parents (a resumed study). Returns slot -> seed run id.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(study)
    exp_id = exp.experiment_id if exp else client.create_experiment(
        study, artifact_location=(artifact_root / study).as_uri())
    parents = {(r.data.tags["dlf.variant"], r.data.tags["dlf.dataset"]): r.info.run_id  # a rerun reuses them
               for r in client.search_runs([exp_id], "tags.`dlf.level` = 'parent'")}
    ids = {}
    for (variant, dataset, seed), slot in slots.items():
        tags = _common_tags(study, CATALOGUE[variant], dataset, *datasets[dataset])
        if (variant, dataset) not in parents:
            run = client.create_run(exp_id, run_name=f"{variant}@{dataset}", tags=tags | {"dlf.level": "parent"})
            parents[(variant, dataset)] = run.info.run_id
        if slot is not None:
            ids[(variant, dataset, seed)] = _log_seed(client, exp_id, parents[(variant, dataset)],
                                                      tags, variant, dataset, seed, slot, epochs)
    return ids


def _common_tags(study: str, v: Variant, dataset: str, corpus: str, synthetic: bool) -> dict[str, str]:
    return {"dlf.study": study, "dlf.variant": v.name, "dlf.dataset": dataset, "dlf.corpus": corpus,
            "dlf.synthetic": "true" if synthetic else "false", "dlf.group": v.group or "",
            "dlf.label": v.label, "dlf.latex": v.latex, "dlf.order": str(v.order)}


def _log_seed(client, exp_id, parent_id, tags, variant, dataset, seed, slot: Slot, epochs: int) -> str:
    from mlflow.entities import Metric, Param

    key = hashlib.sha256(f"{variant}|{dataset}|{seed}".encode()).hexdigest()
    seed_tags = tags | {
        "dlf.level": "seed", "mlflow.parentRunId": parent_id, "dlf.seed": str(seed), "dlf.run_key": key,
        "dlf.code_version": "test", "dlf.data_fingerprint": "0" * 64, "dlf.env.torch": "2.x",
        "dlf.env.cuda": "none", "dlf.env.device": "cpu", "dlf.env.python": "3.x", "dlf.env.host": "test",
    } | slot.extra_tags
    run = client.create_run(exp_id, run_name=f"{variant}@{dataset}#{seed}", tags=seed_tags)
    rid, now = run.info.run_id, int(time.time() * 1000)
    metrics = []
    for epoch in range(1, epochs + 1):  # per-epoch history, deliberately unlike the final values
        metrics += [Metric("train_loss", 1.0 / epoch, now, epoch), Metric("val_loss", 0.9, now, epoch)]
        metrics += [Metric(f"val_{m}", 0.01 * epoch, now, epoch) for m in METRIC_NAMES]
    if slot.status == "FINISHED":  # finals last, at step = epochs: each name's latest value
        final = {f"val_{m}": slot.metrics.get(m, 0.5) + 0.001 for m in METRIC_NAMES}
        final |= {f"test_{m}": v for m, v in slot.metrics.items()}
        final |= {"best_epoch": epochs - 1, "epochs": epochs, "train_seconds": 1.5}
        metrics += [Metric(k, v, now + 1, epochs) for k, v in final.items()]
    params = [Param("loss.lambda_r", "0.0" if variant == "wo_lr" else "0.1"), Param("seed", str(seed))]
    client.log_batch(rid, metrics=metrics, params=params)
    client.log_dict(rid, {"seed": seed, "variant": variant}, "config.json")
    client.log_dict(rid, {"torch": "2.x"}, "environment.json")
    if slot.predictions is not None:
        rows = "".join(f"{i},{y},{p}\n" for i, y, p in slot.predictions)
        client.log_text(rid, "id,label,pred\n" + rows, "predictions/test.csv")
    if slot.status != "RUNNING":
        client.set_terminated(rid, slot.status)
    return rid


def fractions(acc7: float, acc2: float, f1: float, mae: float, acc5: float | None = None,
              corr: float = 0.7) -> dict[str, float]:
    """Test metrics as the tracker logs them (accuracies as fractions) from paper-style points."""
    return {"acc7": acc7 / 100, "acc2": acc2 / 100, "f1": f1 / 100, "mae": mae, "corr": corr,
           "acc5": (acc5 if acc5 is not None else acc7 + 5) / 100,
           "acc2_has0": (acc2 - 1) / 100, "f1_has0": (f1 - 1) / 100}



# The demo stores used by the report tests (values in points; see ``fractions``).
BASE = {"full": 45.0, "only_a": 15.0, "wo_lr": 44.0, "wo_lfa": 42.0}


def demo_metrics(variant: str, seed: int) -> dict[str, float]:
    b = BASE[variant]
    return fractions(b + seed * 0.5 + (seed % 2) * 0.3, 2 * b - 5 + seed * 0.2, 2 * b - 6 + seed * 0.1,
                     0.70 + (50 - b) / 50 + seed * 0.01, corr=0.70 + seed * 0.01)


def demo_predictions(seed: int, n: int = 21) -> list[tuple[str, float, float]]:
    """Labels cover all 7 classes; predictions are off by one class for every third sample."""
    return [(f"clip{i}", float(i % 7 - 3), float(i % 7 - 3) + (1.0 if i % 3 == seed % 3 else 0.1))
            for i in range(n)]


def build_demo_store(folder: Path) -> str:
    """Two studies. 'demo' (synthetic-mosi, seeds 0-2): only_a#2 never ran, wo_lr#1 failed once and
    finished on the retry, wo_lfa#2 failed, wo_lfa#1 is still running. 'realdemo' (real mosi and
    mosei, seeds 0-1): full on both, wo_lr on mosi; full@mosei#1 has no predictions artifact."""
    uri = store_uri(folder)
    art = folder / "artifacts"
    slots: dict = {}
    for v in BASE:
        for s in range(3):
            slots[(v, "synthetic-mosi", s)] = Slot(demo_metrics(v, s),
                                                   predictions=demo_predictions(s) if v == "full" else None)
    slots[("only_a", "synthetic-mosi", 2)] = None
    slots[("wo_lr", "synthetic-mosi", 1)] = Slot({}, status="FAILED")
    slots[("wo_lfa", "synthetic-mosi", 2)] = Slot({}, status="FAILED")
    slots[("wo_lfa", "synthetic-mosi", 1)] = Slot({}, status="RUNNING")
    log_study(uri, "demo", {"synthetic-mosi": ("mosi", True)}, slots, art)
    retry = {("wo_lr", "synthetic-mosi", 1): Slot(demo_metrics("wo_lr", 1))}
    log_study(uri, "demo", {"synthetic-mosi": ("mosi", True)}, retry, art)
    real = {(v, d, s): Slot(demo_metrics(v, s), predictions=demo_predictions(s) if v == "full" else None)
            for d in ("mosi", "mosei") for v in ("full", "wo_lr") for s in range(2) if d == "mosi" or v == "full"}
    real[("full", "mosei", 1)].predictions = None
    log_study(uri, "realdemo", {"mosi": ("mosi", False), "mosei": ("mosei", False)}, real, art)
    return uri


_SHARED: dict[str, str] = {}


def shared_demo_store(tmp_path_factory) -> str:
    """The demo store, built once per test session (the report only reads it)."""
    if "uri" not in _SHARED:
        _SHARED["uri"] = build_demo_store(tmp_path_factory.mktemp("demo-store"))
    return _SHARED["uri"]
