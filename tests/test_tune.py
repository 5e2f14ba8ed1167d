"""dlf.tune as a library, with a stand-in trainer (fast, deterministic, sentinel test metrics).

The stand-in follows the ``train_run`` contract: it calls ``on_epoch`` after every epoch with the
training-contract metric names and lets its exceptions (optuna.TrialPruned) propagate. Its
validation MAE is a smooth function of the loss weights; its TEST metrics are a sentinel value, so
any leak of a test metric into the objective, the sampler or the storage is visible.
"""
from __future__ import annotations

import math
import re
import shutil
import signal
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import yaml
from optuna.trial import TrialState

import dlf.train.loop
from dlf.errors import DLFError
from dlf.tune import TuneOptions, tune

SENTINEL = 987654.321
OPTIMUM = {"loss.lambda_r": 0.3, "loss.beta_l": 1.0}


class StandInTrainer:
    def __init__(self, epochs: int = 3):
        self.epochs = epochs
        self.calls: list[tuple[int, dict]] = []

    def __call__(self, cfg, dataset, runtime=None, on_epoch=None, progress=None):
        weights = {"loss.lambda_r": cfg.loss.lambda_r, "loss.beta_l": cfg.loss.beta_l}
        self.calls.append((cfg.seed, weights))
        score = sum(math.log(weights[k] / OPTIMUM[k]) ** 2 for k in OPTIMUM)
        final = 0.5 + 0.1 * score + 0.001 * (cfg.seed % 7)
        history = []
        for epoch in range(1, self.epochs + 1):
            mae = final + 0.3 / epoch
            m = {"train_loss": 2 * mae, "val_loss": mae, "val_mae": mae, "val_acc2": 1 - mae / 3,
                 "val_corr": 1 - mae, "lr": 1e-4}
            history.append(m)
            if on_epoch is not None:
                on_epoch(epoch, dict(m))
        best = len(history)
        test = {k: SENTINEL for k in ("mae", "acc2", "acc7", "f1", "corr")}
        return SimpleNamespace(config=cfg, best_epoch=best, epochs=best, history=history,
                               val={k[4:]: v for k, v in history[-1].items() if k.startswith("val_")},
                               test=test, test_predictions={}, state_dict={}, train_seconds=0.01,
                               stopped_early=False)


@pytest.fixture
def trainer(monkeypatch):
    t = StandInTrainer()
    monkeypatch.setattr(dlf.train.loop, "train_run", t)
    return t


@pytest.fixture(scope="module")
def tracking(tmp_path_factory, empty_mlflow_db) -> str:
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    shutil.copyfile(empty_mlflow_db, path)  # a new store, without its ~1 s of schema migrations
    return f"sqlite:///{path}"


@pytest.fixture
def study_file(tmp_path, tiny_mosi) -> Path:
    body = {
        "name": "tunetest", "datasets": [str(tiny_mosi)], "variants": ["full"], "seeds": [1111, 1112, 1113],
        "set": {"train.max_epochs": 3, "train.accumulation": 1},
        "tune": {"pruner": "none", "n_startup_trials": 2, "top_k": 2},
    }
    path = tmp_path / "tunetest.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def opts(study_file, tracking, tmp_path, **kw) -> TuneOptions:
    base = dict(study=str(study_file), storage=str(tmp_path / "tune.journal"), study_name="t",
                tracking_uri=tracking, progress=False, threads=1, space=None, plots=False)
    base.update(kw)
    return TuneOptions(**base)


def load(o: TuneOptions) -> optuna.Study:
    from dlf.tune.storage import open_storage

    return optuna.load_study(study_name=o.study_name, storage=open_storage(o.storage))


def finished(study):
    return [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


@pytest.mark.slow
def test_trials_is_a_total_and_rerunning_tops_up(trainer, study_file, tracking, tmp_path):
    first = tune(opts(study_file, tracking, tmp_path, trials=6))
    assert first.created and first.counts["finished"] == 6
    second = tune(opts(study_file, tracking, tmp_path, trials=8))
    assert not second.created
    study = load(opts(study_file, tracking, tmp_path))
    assert len(finished(study)) == 8 and len(study.trials) == 8
    # Trial 0 is the official weights, enqueued once (not again on the rerun).
    official = [t for t in study.trials if t.user_attrs.get("dlf.official")]
    assert [t.number for t in official] == [0]
    assert official[0].params["loss.lambda_r"] == 0.1 and official[0].params["loss.beta_l"] == 3.0
    # A third run with the same total trains nothing new (re-evaluations are cached too).
    before = len(trainer.calls)
    tune(opts(study_file, tracking, tmp_path, trials=8))
    assert len(trainer.calls) == before and len(load(opts(study_file, tracking, tmp_path)).trials) == 8


def test_no_test_metric_reaches_objective_sampler_storage_or_tracking(trainer, study_file, tracking, tmp_path,
                                                                     tiny_mosi):
    o = opts(study_file, tracking, tmp_path, trials=4, study_name="sentinel")
    result = tune(o)
    study = load(o)
    for t in study.trials:
        assert SENTINEL not in (t.values or [])
        assert str(SENTINEL) not in repr(t.user_attrs) and str(SENTINEL) not in repr(t.intermediate_values)
        assert t.values[0] == pytest.approx(t.user_attrs["dlf.val"]["val_mae"])  # validation, selected epoch
    assert str(SENTINEL) not in Path(o.storage).read_text()
    assert str(SENTINEL) not in repr(study.user_attrs)
    assert all(SENTINEL not in c.per_seed.values() for c in result.candidates)
    assert str(SENTINEL) not in result.export.read_text()
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking)
    exp = c.get_experiment_by_name("tunetest [tune]")
    runs = c.search_runs([exp.experiment_id], filter_string="tags.`dlf.tune_study` = 'sentinel'")
    assert len(runs) >= 5  # parent + 4 trials (+ re-evaluations)
    for r in runs:
        assert SENTINEL not in r.data.metrics.values()
        assert not any(k.startswith("test_") for k in r.data.metrics)
        # the trials and their parent show the data in the UI's Dataset column
        assert [(i.dataset.name, i.dataset.source_type) for i in r.inputs.dataset_inputs] == [(tiny_mosi.name, "local")]
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"


@pytest.mark.slow
def test_changed_space_or_setup_is_refused(trainer, study_file, tracking, tmp_path):
    tune(opts(study_file, tracking, tmp_path, trials=2, top_k=1))
    space = tmp_path / "space.yaml"
    space.write_text("loss.lambda_r: {low: 0.01, high: 1.0, log: true}\n")
    with pytest.raises(DLFError) as err:
        tune(opts(study_file, tracking, tmp_path, trials=3, space=str(space)))
    msg = str(err.value)
    assert "different search space" in msg and "--study-name" in msg and "--space" in msg and "\n" not in msg
    with pytest.raises(DLFError, match="different objectives"):
        tune(opts(study_file, tracking, tmp_path, trials=3, objective="val_acc2"))
    with pytest.raises(DLFError, match=r"different base_config \(train.lr"):
        tune(opts(study_file, tracking, tmp_path, trials=3, set_overrides={"train.lr": 0.001}))
    assert len(load(opts(study_file, tracking, tmp_path)).trials) == 2  # nothing was added


@pytest.mark.slow
def test_top_k_reevaluation_and_export_accepted_by_run(trainer, study_file, tracking, tmp_path):
    from dlf.study.spec import expand, load_study

    o = opts(study_file, tracking, tmp_path, trials=5, study_name="exp", plots=True)
    result = tune(o)
    assert len(result.candidates) == 2 and all(len(c.per_seed) == 3 for c in result.candidates)
    # Seed 1111 is the search seed: reused, so only 2 trials x 2 other seeds were trained again.
    reeval_seeds = [s for s, _ in trainer.calls[5:]]
    assert sorted(reeval_seeds) == [1112, 1112, 1113, 1113]
    winner = result.candidates[0]
    assert winner.mean <= result.candidates[1].mean
    doc = yaml.safe_load(result.export.read_text())
    assert result.export == tmp_path / "exp.best.yaml"  # next to the journal by default
    assert doc["overrides"] == winner.params and set(doc["overrides"]) == {
        "loss.lambda_r", "loss.lambda_s", "loss.lambda_m", "loss.lambda_o", "loss.beta_f", "loss.beta_sh",
        "loss.beta_l", "loss.beta_a", "loss.beta_v"}
    prov = doc["provenance"]
    assert (prov["trial"], prov["optuna_study"], prov["storage"]) == (winner.trial, "exp", o.storage)
    assert prov["mean"] == pytest.approx(winner.mean) and prov["n_seeds"] == 3
    # `run --set-file` path: D's loader and expansion take the file as is.
    specs = expand(load_study(study_file), set_file=result.export)
    assert specs[0].config.loss.lambda_r == doc["overrides"]["loss.lambda_r"]
    assert specs[0].config.loss.beta_v == doc["overrides"]["loss.beta_v"]
    assert any(p.name == "exp.best.history.png" for p in result.plots)
    assert any(p.name == "exp.best.importance.png" for p in result.plots)


@pytest.mark.slow
def test_median_pruner_prunes_and_tracks_pruned_trials(trainer, study_file, tracking, tmp_path):
    study_file.write_text(study_file.read_text().replace("pruner: none", "pruner: median")
                          .replace("n_startup_trials: 2", "n_startup_trials: 1"))
    o = opts(study_file, tracking, tmp_path, trials=10, study_name="prune")
    body = yaml.safe_load(study_file.read_text())
    body["tune"].update(pruner_startup_trials=1, pruner_warmup_epochs=0)
    study_file.write_text(yaml.safe_dump(body))
    result = tune(o)
    study = load(o)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned and result.counts["PRUNED"] == len(pruned) and len(finished(study)) == 10
    assert all(t.user_attrs["dlf.epochs"] < 3 for t in pruned)  # stopped early
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking)
    run = c.get_run(pruned[0].user_attrs["dlf.mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["dlf.trial_state"] == "PRUNED"


@pytest.mark.slow
def test_multi_objective_reports_pareto_front_without_pruning(trainer, study_file, tracking, tmp_path):
    o = opts(study_file, tracking, tmp_path, trials=4, study_name="multi", multi_objective=["val_mae", "val_acc2"],
             pruner="median", plots=True)
    result = tune(o)
    assert not result.pruning and result.pareto
    assert len(load(o).directions) == 2
    assert any(p.name == "multi.best.pareto.png" for p in result.plots)


def test_stale_running_trial_of_a_dead_process_is_failed_and_retried(tmp_path):
    import subprocess
    import sys

    from dlf.tune.storage import count_claimed, mark_owner, open_storage, reap_stale

    storage = open_storage(str(tmp_path / "s.journal"))
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    mark_owner(trial)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    trial.set_user_attr("dlf.pid", dead.pid)  # as if a since-killed process had owned it
    live = study.ask()
    mark_owner(live)  # this process: alive, must be left alone
    assert count_claimed(study) == 2
    reaped = reap_stale(study, storage)
    assert [t.number for t in reaped] == [0]
    states = {t.number: t.state for t in study.trials}
    assert states[0] == TrialState.FAIL and states[1] == TrialState.RUNNING
    retry = study.trials[2]
    assert retry.state == TrialState.WAITING and retry.params == study.trials[0].params
    assert "dlf.pid" not in retry.user_attrs
    assert reap_stale(study, storage) == []  # idempotent


@pytest.mark.slow
def test_prepare_errors_are_one_line(study_file, tracking, tmp_path):
    from dlf.tune import prepare

    with pytest.raises(DLFError, match="--trials"):
        prepare(opts(study_file, tracking, tmp_path, trials=None))
    with pytest.raises(DLFError, match="unknown validation metric"):
        prepare(opts(study_file, tracking, tmp_path, trials=2, objective="test_mae"))
    with pytest.raises(DLFError, match="--variant 'wo_lr': not in"):
        prepare(opts(study_file, tracking, tmp_path, trials=2, variant="wo_lr"))
    with pytest.raises(DLFError, match="--study-name: 201 characters is too long"):
        prepare(opts(study_file, tracking, tmp_path, trials=2, study_name="s" * 201))
    body = yaml.safe_load(study_file.read_text())
    for key, value in (("pruner_startup_trials", -1), ("top_k", 0), ("sampler_seed", 2**32)):
        study_file.write_text(yaml.safe_dump({**body, "tune": {**body["tune"], key: value}}))
        with pytest.raises(DLFError, match=re.escape(f"tune.{key}={value} is out of range; expected an integer in [")):
            prepare(opts(study_file, tracking, tmp_path, trials=2))
    body["tune"]["bogus"] = 1
    study_file.write_text(yaml.safe_dump(body))
    with pytest.raises(DLFError, match="tune: unknown key 'bogus'"):
        prepare(opts(study_file, tracking, tmp_path, trials=2))


@pytest.mark.slow
def test_rdb_storage_with_heartbeat_and_retry(trainer, study_file, tracking, tmp_path):
    from dlf.tune.storage import HEARTBEAT_S, Retry, open_storage

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    storage = open_storage(url)
    assert isinstance(storage, optuna.storages.RDBStorage)
    assert storage.get_heartbeat_interval() == HEARTBEAT_S
    assert isinstance(storage.get_heartbeat_stale_trial_callback(), Retry)
    o = opts(study_file, tracking, tmp_path, trials=3, storage=url, study_name="rdb", top_k=1)
    result = tune(o)
    from dlf.resources import home_dir

    assert result.counts["finished"] == 3 and result.export == home_dir() / "tune" / "rdb.best.yaml"
    assert len(finished(load(o))) == 3


@pytest.mark.slow
def test_interrupted_trial_is_failed_requeued_and_run_on_resume(trainer, study_file, tracking, tmp_path, monkeypatch):
    o = opts(study_file, tracking, tmp_path, trials=4, study_name="ctrlc", top_k=1)
    real = trainer.__call__

    def interrupt_third(cfg, dataset, runtime=None, on_epoch=None, progress=None):
        if len(trainer.calls) == 2:
            trainer.calls.append((cfg.seed, {}))
            raise KeyboardInterrupt
        return real(cfg, dataset, runtime, on_epoch, progress)

    monkeypatch.setattr(dlf.train.loop, "train_run", interrupt_third)
    with pytest.raises(KeyboardInterrupt):
        tune(o)
    states = [t.state for t in load(o).trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    monkeypatch.setattr(dlf.train.loop, "train_run", trainer)
    tune(o)
    trials = load(o).trials
    assert trials[3].params == trials[2].params and trials[3].state == TrialState.COMPLETE
    assert len(finished(load(o))) == 4


@pytest.mark.parametrize("stage", ["search", "reeval"])
@pytest.mark.slow
def test_ctrl_c_right_after_a_trial_run_is_created_leaves_no_run_running(trainer, study_file, tracking, tmp_path,
                                                                         monkeypatch, stage):
    """The interrupt lands once the run exists and is known, so the run is closed, not left RUNNING."""
    from mlflow.tracking import MlflowClient

    from dlf.tune.track import TrialTracker

    o = opts(study_file, tracking, tmp_path, trials=3, study_name=f"ctrlc-{stage}", top_k=1)
    real = TrialTracker.start

    def start_then_interrupt(self, number, overrides, seed=None):
        run_id = real(self, number, overrides, seed)
        if (number == 1 and seed is None) if stage == "search" else seed is not None:
            signal.raise_signal(signal.SIGINT)
        return run_id

    monkeypatch.setattr(TrialTracker, "start", start_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        tune(o)
    c = MlflowClient(tracking_uri=tracking)
    runs = c.search_runs([c.get_experiment_by_name("tunetest [tune]").experiment_id],
                         f"tags.`dlf.tune_study` = '{o.study_name}'")
    trial_runs = [r for r in runs if r.data.tags["dlf.level"] != "tune"]
    assert trial_runs and "RUNNING" not in {r.info.status for r in trial_runs}
    assert [r.data.tags["dlf.trial_state"] for r in trial_runs if r.info.status == "FAILED"] == ["FAIL"]
    if stage == "search":  # the interrupted trial is queued again with its parameters
        assert [t.state for t in load(o).trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]


@pytest.mark.slow
def test_repeated_failures_stop_the_search_with_the_cause(study_file, tracking, tmp_path, monkeypatch):
    def broken(cfg, dataset, runtime=None, on_epoch=None, progress=None):
        raise ValueError("features contain NaN")

    monkeypatch.setattr(dlf.train.loop, "train_run", broken)
    result = tune(opts(study_file, tracking, tmp_path, trials=5, study_name="broken"))
    assert len(result.errors) == 1 and "3 trials in a row failed" in result.errors[0]
    assert "ValueError: features contain NaN" in result.errors[0]
    assert result.counts["FAIL"] == 3 and result.counts["finished"] == 0 and result.export is None
