"""What the MLflow UI shows of a study: experiment kind, dataset inputs, the runs page `ui` prints."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from study_fixtures import write_study

from dlf.config import DataConfig
from dlf.run import mlflow_view, tracking

KIND = ("mlflow.experimentKind", "custom_model_development")


def test_runs_url_opens_the_runs_table_in_the_model_training_workflow():
    assert mlflow_view.runs_url("http://127.0.0.1:5001/", "3") == \
        "http://127.0.0.1:5001/#/experiments/3/runs?workflowType=machine_learning"
    assert mlflow_view.home_url("http://h:1") == "http://h:1/#/experiments?workflowType=machine_learning"


def _synthetic(aligned: bool = True):
    """(name as in the study, data config, loaded dataset) of a synthetic-MOSI run."""
    data = DataConfig(aligned=aligned, scale=0.04, synth_seed=3)
    dataset = SimpleNamespace(fingerprint="ab" * 32, corpus="mosi", aligned=aligned, synthetic=True,
                              path=Path("/cache/synthetic/x.pkl"), splits={"train": [0] * 51, "valid": [0] * 9,
                                                                          "test": [0] * 27})
    return "synthetic-mosi", data, dataset


def test_synthetic_data_is_logged_with_its_generator_as_source():
    given = mlflow_view.dataset_input(*_synthetic())
    ds = given.dataset
    assert (ds.name, ds.digest, ds.source_type) == ("synthetic-mosi", "abababababab", "code")
    assert json.loads(ds.source) == {"tags": {"generator": "dlf.data.synthetic", "corpus": "mosi", "aligned": "true",
                                              "scale": "0.04", "seed": "3", "version": "1"}}
    assert json.loads(ds.profile) == {"sha256": "ab" * 32, "corpus": "mosi", "aligned": True, "synthetic": True,
                                      "train_samples": 51, "valid_samples": 9, "test_samples": 27}
    assert [(t.key, t.value) for t in given.tags] == [("mlflow.data.context", "train/valid/test")]
    assert mlflow_view.dataset_input(*_synthetic(aligned=False)).dataset.name == "synthetic-mosi (unaligned)"



def test_a_run_that_loses_the_race_for_a_new_dataset_logs_it_on_a_second_try():
    calls = []

    class Store:  # two workers insert the same new dataset at once: one insert is refused
        def log_inputs(self, run_id, datasets):
            calls.append(run_id)
            if len(calls) == 1:
                raise RuntimeError("UNIQUE constraint failed: datasets.experiment_id, datasets.name")

    mlflow_view.log_dataset_input(Store(), ["seed-run", "parent-run"], *_synthetic())
    assert calls == ["seed-run", "seed-run", "parent-run"]

def test_dataset_names_follow_the_study():
    assert mlflow_view.dataset_name("mosi", True) == "mosi"
    assert mlflow_view.dataset_name("mosei", False) == "mosei (unaligned)"
    assert mlflow_view.dataset_name("/data/MOSI/Processed/unaligned_50.pkl", False) == "unaligned_50.pkl"


@pytest.mark.slow  # opens MLflow stores
def test_experiments_are_tagged_as_model_training_new_and_old(new_store, tmp_path):
    uri = new_store(tmp_path / "mlflow.db")
    c = tracking.client(uri)
    fresh = tracking.ensure_experiment(c, "fresh", uri)
    assert c.get_experiment(fresh).tags[KIND[0]] == KIND[1]
    old = c.create_experiment("made before the tag")  # a store from an earlier version
    chosen = c.create_experiment("chosen", tags={KIND[0]: "genai_development"})
    assert tracking.ensure_experiment(c, "made before the tag", uri) == old
    assert c.get_experiment(old).tags[KIND[0]] == KIND[1]
    tracking.ensure_experiment(c, "chosen", uri)
    assert c.get_experiment(chosen).tags[KIND[0]] == "genai_development"  # someone's choice stays


@pytest.mark.slow  # opens an MLflow store
def test_ui_prints_the_runs_page(new_store, tmp_path, monkeypatch, capsys):
    from dlf.cli import main
    from dlf.run import commands

    uri = new_store(tmp_path / "mlflow.db")
    c = tracking.client(uri)
    assert commands.ui_command(None, uri, "127.0.0.1", 5123)[1] == \
        "http://127.0.0.1:5123/#/experiments?workflowType=machine_learning"  # no run yet: the list
    older = c.create_experiment("older")  # made without the tag, as by an earlier version
    c.create_run(older)
    newer = tracking.ensure_experiment(c, "newer", uri)
    c.create_run(newer)
    assert commands.ui_command(None, uri, "127.0.0.1", 5123)[1] == mlflow_view.runs_url("http://127.0.0.1:5123", newer)
    study = write_study(tmp_path, "x.pkl", name="older")
    served = []
    monkeypatch.setattr(commands, "serve_ui", lambda cmd: served.append(cmd) or 0)  # no server
    monkeypatch.setattr(sys, "argv", ["dlf-ablate", "ui", str(study), "--tracking-uri", uri, "--port", "5123"])
    with pytest.raises(SystemExit) as done:
        main()
    assert (done.value.code or 0) == 0 and len(served) == 1
    url = f"http://127.0.0.1:5123/#/experiments/{older}/runs?workflowType=machine_learning"
    assert f"MLflow UI: {url}" in capsys.readouterr().out
    assert c.get_experiment(older).tags[KIND[0]] == KIND[1]  # opening it tagged it
