"""MLflow layout of a study: URIs, hierarchy, tags, params, metrics and artifacts (queried with MlflowClient)."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dlf.run import store_file, tracking
from dlf.errors import DLFError
from study_fixtures import CODE_VERSION, write_study

CONTRACT_TAGS = ["dlf.study", "dlf.variant", "dlf.dataset", "dlf.corpus", "dlf.synthetic", "dlf.group", "dlf.label",
                 "dlf.latex", "dlf.order"]
SEED_TAGS = ["dlf.seed", "dlf.run_key", "dlf.code_version", "dlf.data_fingerprint", "dlf.env.torch", "dlf.env.cuda",
             "dlf.env.device", "dlf.env.python", "dlf.env.host"]


def test_default_uri_is_sqlite_in_the_home(monkeypatch, tmp_path):
    monkeypatch.setenv("DLF_HOME", str(tmp_path))
    assert tracking.resolve_tracking_uri() == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example:5000")
    assert tracking.resolve_tracking_uri() == "http://example:5000"
    assert tracking.resolve_tracking_uri("sqlite:////x/y.db") == "sqlite:////x/y.db"  # the flag wins
    with pytest.raises(DLFError, match="file store is not supported"):
        tracking.resolve_tracking_uri("./mlruns")


def test_artifacts_go_next_to_the_database_never_to_mlruns(monkeypatch, tmp_path):
    monkeypatch.setenv("DLF_HOME", str(tmp_path / "home"))
    expected = "file:///data/x/mlartifacts/my_study"
    assert tracking.artifact_location("sqlite:////data/x/mlflow.db", "my study") == expected
    assert tracking.artifact_location("postgresql://u@h/db", "s") == (tmp_path / "home" / "mlartifacts" / "s").as_uri()
    assert tracking.artifact_location("http://server:5000", "s") is None  # the server owns its artifact store


def test_unreachable_store_is_one_clear_line(tmp_path):
    with pytest.raises(DLFError, match="tracking store sqlite:////proc/nope/x.db"):
        tracking.client("sqlite:////proc/nope/x.db")


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, tiny_mosi, empty_mlflow_db):
    """A finished tiny study (full and wo_lr, one seed) in a fresh SQLite store."""
    from dlf.run.local import run_study
    from dlf.study.spec import expand, load_study

    tmp = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DLF_CODE_VERSION", CODE_VERSION)
        specs = expand(load_study(write_study(tmp, tiny_mosi, name="tracked study", seeds=(7,))))
        uri = f"sqlite:///{tmp}/mlflow.db"
        shutil.copyfile(empty_mlflow_db, tmp / "mlflow.db")  # a new store, without its schema migrations
        result = run_study(specs, uri, workers=1, threads=1)
    assert result.ok, result.outcomes
    return uri, specs, result, tmp


@pytest.mark.slow
def test_hierarchy_and_contract_tags(tracked):
    uri, specs, result, tmp = tracked
    c = tracking.client(uri)
    exp = c.get_experiment_by_name("tracked study")
    assert exp.artifact_location == (tmp / "mlartifacts" / "tracked_study").as_uri()
    runs = c.search_runs([exp.experiment_id])
    parents = {r.info.run_name: r for r in runs if r.data.tags["dlf.level"] == "parent"}
    seeds = {r.info.run_name: r for r in runs if r.data.tags["dlf.level"] == "seed"}
    dataset = specs[0].dataset
    assert set(parents) == {f"full@{dataset}", f"wo_lr@{dataset}"}
    assert set(seeds) == {f"full@{dataset}#7", f"wo_lr@{dataset}#7"}
    for spec in specs:
        parent, child = parents[f"{spec.variant}@{dataset}"], seeds[spec.title]
        assert parent.info.status == child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.run_id == result.outcomes[spec.key].run_id
        for run in (parent, child):
            assert all(t in run.data.tags for t in CONTRACT_TAGS)
            assert run.data.tags["dlf.variant"] == spec.variant and run.data.tags["dlf.study"] == "tracked study"
        assert all(child.data.tags[t] for t in SEED_TAGS)
        assert child.data.tags["dlf.run_key"] == spec.key and child.data.tags["dlf.seed"] == "7"
        assert child.data.tags["dlf.code_version"] == CODE_VERSION
        assert child.data.tags["dlf.data_fingerprint"] == spec.data_fingerprint
        assert child.data.tags["dlf.env.device"] == "cpu"
    assert seeds[f"wo_lr@{dataset}#7"].data.tags["dlf.group"] == "Different Regularization"
    assert parents[f"full@{dataset}"].data.tags["dlf.label"] == "DLF (Ours)"


@pytest.mark.slow
def test_params_metrics_and_per_epoch_history(tracked):
    uri, specs, _, _ = tracked
    c = tracking.client(uri)
    for spec in specs:
        run = c.get_run(_run_id(tracked, spec))
        assert run.data.params["loss.lambda_r"] == str(spec.config.loss.lambda_r)
        assert json.loads(run.data.params["model.modalities"]) == ["l", "a", "v"]
        m = run.data.metrics
        for name in ("val_mae", "val_acc2", "test_mae", "test_acc7", "test_f1", "test_corr", "best_epoch",
                     "epochs", "train_seconds", "run_seconds"):
            assert name in m, name
        assert m["run_seconds"] > m["train_seconds"] > 0  # the run also builds the model and tests once
        epochs = int(m["epochs"])
        assert 1 <= m["best_epoch"] <= epochs == 2
        # The latest val_* value is the selected epoch's, not the last epoch's.
        best = [h for h in c.get_metric_history(run.info.run_id, "val_mae") if h.step == m["best_epoch"]]
        assert m["val_mae"] == best[0].value
        history = c.get_metric_history(run.info.run_id, "train_task_f")
        assert sorted(h.step for h in history) == list(range(1, epochs + 1))
        assert [h.step for h in c.get_metric_history(run.info.run_id, "lr")] == [1, 2]
        recon = c.get_metric_history(run.info.run_id, "train_recon")
        assert (len(recon) == epochs) == (spec.variant == "full")  # a switched-off term is not logged


@pytest.mark.slow
def test_artifacts_config_environment_predictions_checkpoint(tracked, tiny_mosi):
    from mlflow.artifacts import download_artifacts

    from dlf.train.checkpoint import evaluate_checkpoint
    from dlf.config import RunConfig

    uri, specs, _, tmp = tracked
    spec = specs[0]
    run_id = _run_id(tracked, spec)
    names = {a.path for a in tracking.client(uri).list_artifacts(run_id)}
    assert names == {"config.json", "environment.json", "predictions", "checkpoint"}
    local = Path(download_artifacts(run_id=run_id, tracking_uri=uri, dst_path=str(tmp / "dl")))
    assert RunConfig.from_dict(json.loads((local / "config.json").read_text())) == spec.config
    env = json.loads((local / "environment.json").read_text())
    assert {"torch", "cuda", "device", "python", "platform", "host", "dlf_ablate", "numpy", "mlflow"} <= set(env)
    with open(local / "predictions" / "test.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["id", "label", "pred"] and len(rows) == 27  # the tiny test split
    # The checkpoint reproduces the logged predictions on the test split.
    ev = evaluate_checkpoint(local / "checkpoint" / "model.pt", str(tiny_mosi))
    assert [r["id"] for r in rows] == ev.ids
    assert max(abs(float(r["pred"]) - p) for r, p in zip(rows, ev.preds)) < 1e-5



@pytest.mark.slow
def test_experiment_is_model_training_and_each_run_has_its_data_as_dataset_input(tracked, tiny_mosi):
    import pickle

    uri, specs, _, _ = tracked
    c = tracking.client(uri)
    exp = c.get_experiment_by_name("tracked study")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens it on its runs
    with open(tiny_mosi, "rb") as fh:
        sizes = {split: len(part["regression_labels"]) for split, part in pickle.load(fh).items()
                 if split in ("train", "valid", "test")}
    for spec in specs:
        run = c.get_run(_run_id(tracked, spec))
        (given,) = run.inputs.dataset_inputs
        fingerprint = run.data.tags["dlf.data_fingerprint"]
        assert given.dataset.name == Path(tiny_mosi).name and given.dataset.digest == fingerprint[:12]
        assert given.dataset.source_type == "local"
        assert json.loads(given.dataset.source) == {"uri": str(Path(tiny_mosi).resolve())}
        profile = json.loads(given.dataset.profile)
        assert profile["sha256"] == fingerprint == spec.data_fingerprint
        assert {k: profile[f"{k}_samples"] for k in sizes} == sizes == {"train": 51, "valid": 9, "test": 27}
        assert {(t.key, t.value) for t in given.tags} == {("mlflow.data.context", "train/valid/test")}
        parent = c.get_run(run.data.tags["mlflow.parentRunId"])  # the row the runs table shows collapsed
        assert [i.dataset.digest for i in parent.inputs.dataset_inputs] == [fingerprint[:12]]

def test_epoch_logger_batches_writes():
    calls = []

    class FakeClient:
        def log_batch(self, run_id, metrics=(), params=()):
            calls.append([(m.key, m.step) for m in metrics])

    seen = []
    log = tracking.EpochLogger(FakeClient(), "r", flush_seconds=3600, forward=lambda e, m: seen.append(e))
    for epoch in (1, 2, 3):
        log(epoch, {"train_loss": 1.0 / epoch, "val_mae": 0.5})
    assert calls == [] and seen == [1, 2, 3]  # buffered, but progress is forwarded at once
    log.flush()
    assert calls == [[("train_loss", 1), ("val_mae", 1), ("train_loss", 2), ("val_mae", 2), ("train_loss", 3),
                      ("val_mae", 3)]]


def _run_id(tracked, spec) -> str:
    return tracked[2].outcomes[spec.key].run_id


@pytest.mark.slow
def test_fast_sqlite_look_agrees_with_mlflow(tracked, tmp_path):
    uri, specs, result, tmp = tracked
    copy = tmp_path / "copy.db"  # deleting a run must not disturb the shared store
    shutil.copy(uri.removeprefix("sqlite:///"), copy)
    c = tracking.client(f"sqlite:///{copy}")
    exp = c.get_experiment_by_name("tracked study").experiment_id
    done, parents = store_file.sqlite_finished(f"sqlite:///{copy}", "tracked study")
    assert done == {k: r.info.run_id for k, r in tracking.finished_keys(c, exp).items()}
    assert done == {s.key: result.outcomes[s.key].run_id for s in specs}
    assert parents == {(s.variant, s.dataset): "FINISHED" for s in specs}
    c.delete_run(done[specs[0].key])  # a run deleted in the UI no longer counts as done
    assert set(store_file.sqlite_finished(f"sqlite:///{copy}", "tracked study")[0]) == {specs[1].key}
    assert set(tracking.finished_keys(c, exp)) == {specs[1].key}
    assert store_file.sqlite_finished(f"sqlite:///{tmp_path}/none.db", "x") is None
    assert store_file.sqlite_finished("http://server:5000", "x") is None


@pytest.mark.slow
def test_cached_rerun_does_not_load_mlflow(tracked):
    uri, specs, _, tmp = tracked
    code = (
        "import sys\n"
        "from dlf.study.spec import expand, load_study\n"
        "from dlf.run.local import run_study\n"
        f"specs = expand(load_study({str(tmp / 'tracked study.yaml')!r}))\n"
        f"result = run_study(specs, {uri!r})\n"
        "print(result.counts()['cached'], 'mlflow' in sys.modules)\n"
    )
    env = {**os.environ, "DLF_CODE_VERSION": CODE_VERSION}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["2", "False"]
