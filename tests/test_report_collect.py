"""Collect against a real temporary MLflow SQLite store laid out as the tracking contract says
(see tests/report_store.py, which writes it)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from report_store import demo_metrics, shared_demo_store

from dlf.errors import DLFError
from dlf.report.collect import collect, study_slots


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    return shared_demo_store(tmp_path_factory)


@pytest.fixture(scope="module")
def demo(uri):
    return collect(uri, ["demo"])


def slot(runs, variant, seed, dataset="synthetic-mosi"):
    got = runs[(runs["variant"] == variant) & (runs["seed"] == seed) & (runs["dataset"] == dataset)]
    assert len(got) == 1, got
    return got.iloc[0]


def test_one_tidy_row_per_seed_slot_with_tags_and_final_metrics(demo):
    runs = demo.runs
    # 4 variants x 3 seeds, minus only_a#2 that never started; the retried wo_lr#1 counts once
    assert len(runs) == 11 and set(runs["study"]) == {"demo"}
    full0 = slot(runs, "full", 0)
    assert (full0["corpus"], bool(full0["synthetic"]), full0["label"], full0["order"]) == \
        ("mosi", True, "DLF (Ours)", 0)
    assert pd.isna(full0["group"])  # the full model has no group (tag '')
    assert slot(runs, "wo_lr", 0)["latex"] == "w/o $\\mathcal{L}_r$"
    assert slot(runs, "wo_lr", 0)["group"] == "Different Regularization"
    expected = demo_metrics("full", 2)
    row = slot(runs, "full", 2)
    for m, v in expected.items():
        assert row[f"test_{m}"] == pytest.approx(v)
        # the final val_* of the selected epoch, not the last per-epoch value (0.03)
        assert row[f"val_{m}"] == pytest.approx(expected.get(m, 0.5) + 0.001)
    assert len(row["run_key"]) == 64 and row["status"] == "FINISHED"
    assert list(runs.columns[:14]) == ["study", "variant", "dataset", "corpus", "synthetic", "group", "label",
                                       "latex", "order", "seed", "run_key", "status", "run_id", "start_time"]


def test_a_finished_retry_replaces_the_failed_attempt(demo):
    row = slot(demo.runs, "wo_lr", 1)
    assert row["status"] == "FINISHED"
    assert row["test_acc7"] == pytest.approx(demo_metrics("wo_lr", 1)["acc7"])
    assert len(demo.finished) == 9  # 11 slots, minus wo_lfa#1 (running) and wo_lfa#2 (failed)


def test_missing_failed_and_running_runs_are_listed(demo):
    problems = {(p.variant, p.seed): p.status for p in demo.problems.itertuples()}
    assert problems == {("only_a", 2): "missing", ("wo_lfa", 2): "failed", ("wo_lfa", 1): "running"}


def test_expected_runs_come_from_the_study_yaml(uri, tmp_path):
    study = tmp_path / "demo.yaml"
    study.write_text("name: demo\ndatasets: [synthetic-mosi]\nvariants: [full, only_a, wo_lr, wo_lfa, wo_hp]\n"
                     "seeds: [0, 1, 2, 3]\n")
    name, slots = study_slots(str(study))
    assert name == "demo" and len(slots) == 5 * 4 and ("wo_hp", "synthetic-mosi", 3) in slots
    got = collect(uri, [name], {name: slots}, predictions_for=())
    missing = {(p.variant, p.seed) for p in got.problems.itertuples() if p.status == "missing"}
    assert missing == {("only_a", 2)} | {(v, 3) for v in ("full", "only_a", "wo_lr", "wo_lfa", "wo_hp")} | \
        {("wo_hp", s) for s in range(3)}


def test_study_arguments_resolve_to_names(tmp_path):
    assert study_slots("quickstart")[0] == "quickstart"  # the built-in study
    assert study_slots("only-in-the-store") == ("only-in-the-store", None)
    with pytest.raises(DLFError, match="no such study file"):
        study_slots(str(tmp_path / "nope.yaml"))


def test_predictions_are_read_for_the_full_model_only(demo, uri):
    preds = demo.predictions
    assert set(preds["variant"]) == {"full"} and sorted(preds["seed"].unique()) == [0, 1, 2]
    assert len(preds) == 3 * 21 and list(preds.columns) == ["study", "variant", "dataset", "seed", "run_id",
                                                            "id", "label", "pred"]
    first = preds[(preds["seed"] == 1) & (preds["id"] == "clip1")].iloc[0]
    assert (first["label"], first["pred"]) == (-2.0, pytest.approx(-1.0))  # 1 % 3 == seed % 3: off by one
    real = collect(uri, ["realdemo"])
    assert len(real.predictions) == 3 * 21  # full@mosei#1 has no artifact ...
    assert real.warnings and "full@mosei#1" in real.warnings[0][1]  # ... and says so


def test_all_studies_when_none_named(uri):
    got = collect(uri, None, predictions_for=())
    assert set(got.runs["study"]) == {"demo", "realdemo"}
    assert len(got.runs) == 11 + 6


def test_a_missing_sqlite_store_is_an_error_and_is_not_created(tmp_path):
    db = tmp_path / "none.db"
    with pytest.raises(DLFError, match="no MLflow store"):
        collect(f"sqlite:///{db}")
    assert not db.exists()


def test_an_unknown_study_gives_no_rows(uri):
    got = collect(uri, ["nothing-here"])
    assert got.runs.empty and got.problems.empty and got.predictions.empty


def test_collect_is_the_only_report_module_that_imports_mlflow():
    import re

    import dlf.report

    folder = Path(dlf.report.__file__).parent
    # MLflow directly, or through the tracking module's client (its checks of the store)
    pattern = r"^\s*((from|import) mlflow|from dlf.run import tracking)"
    users = {p.name for p in folder.glob("*.py") if re.search(pattern, p.read_text(), re.M)}
    assert users == {"collect.py"}
