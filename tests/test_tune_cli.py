"""`dlf-ablate tune` end to end with the real trainer on tiny synthetic-MOSI and a tiny model:
a search killed mid-trial (SIGKILL) resumes and completes, `--trials` tops up, the winner runs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from dlf.tune.storage import open_storage

TINY_MODEL = {"data.scale": 0.04, "train.max_epochs": 3, "train.accumulation": 1, "model.d_model": 10,
              "model.n_heads": 2, "model.n_levels": 1, "model.mem_levels": 1, "loss.ortho_chunk": 10}
EXE = str(Path(sys.executable).with_name("dlf-ablate"))


def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=300, **kw)


@pytest.mark.slow
def test_default_study_without_mosi_says_where_the_files_go(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DLF_DATA_ROOT"}
    out = cli("tune", "--trials", "100", cwd=tmp_path, env=env)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "$DLF_DATA_ROOT/MOSI/Processed/aligned_50.pkl" in lines[0]
    assert "--dataset synthetic-mosi" in lines[0]
    assert "Traceback" not in out.stderr


def test_bad_space_file_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    from dlf.cli import main

    space = tmp_path / "space.yaml"
    space.write_text("loss.lambda_r: {low: 0, high: 1, log: true}\n")
    monkeypatch.setattr(sys, "argv", ["dlf-ablate", "tune", "--dataset", "synthetic-mosi", "--trials", "2",
                                      "--space", str(space)])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1
    assert str(space) in err and "loss.lambda_r" in err and "low > 0" in err


def _running_after_an_epoch(journal: Path) -> optuna.trial.FrozenTrial | None:
    if not journal.exists():
        return None
    try:
        study = optuna.load_study(study_name="cli", storage=open_storage(str(journal)))
    except KeyError:  # the study is not created yet
        return None
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.number >= 1 and t.user_attrs.get("dlf.epochs", 0) >= 1:
            return t
    return None


@pytest.mark.slow
def test_killed_search_resumes_tops_up_and_the_winner_runs(tmp_path):
    study = tmp_path / "tunecli.yaml"
    study.write_text(yaml.safe_dump({
        "name": "tunecli", "datasets": ["synthetic-mosi"], "variants": ["full"], "seeds": [1111],
        "set": TINY_MODEL,
        # No pruning here: a trial seen after its first epoch must still be running when it is
        # killed (pruning itself is covered by tests/test_tune.py and benchmarks/pruning.py).
        "tune": {"pruner": "none", "n_startup_trials": 2, "top_k": 1},
    }))
    journal, uri = tmp_path / "cli.journal", f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["tune", str(study), "--storage", str(journal), "--study-name", "cli", "--tracking-uri", uri,
            "--threads", "1", "--no-progress", "--no-plots"]

    proc = subprocess.Popen([EXE, *args, "--trials", "6"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    victim, deadline = None, time.monotonic() + 240
    while victim is None:
        assert proc.poll() is None, f"search ended before it could be killed: {proc.stderr.read().decode()}"
        assert time.monotonic() < deadline, "no trial reached its first epoch in time"
        time.sleep(0.1)
        victim = _running_after_an_epoch(journal)
    proc.send_signal(signal.SIGKILL)  # mid-trial: one epoch done, two to go
    proc.wait()
    left = optuna.load_study(study_name="cli", storage=open_storage(str(journal))).trials
    assert [t.number for t in left if t.state == TrialState.RUNNING] == [victim.number]

    # The restart uses two spawned workers on the same journal (they must stop at exactly 6); the
    # top-up runs in this process. Both go through the CLI entry point.
    from typer.testing import CliRunner

    from dlf.cli import app

    resumed = CliRunner().invoke(app, [*args, "--trials", "6", "--workers", "2"])
    assert resumed.exit_code == 0, resumed.output
    assert "failed and re-queued" in resumed.output
    storage = open_storage(str(journal))
    trials = optuna.load_study(study_name="cli", storage=storage).trials
    assert trials[victim.number].state == TrialState.FAIL
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retry) == 1 and retry[0].params == victim.params and retry[0].state.is_finished()
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 6
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert len({t.user_attrs["dlf.pid"] for t in trials[victim.number + 1:]}) == 2  # both workers trained

    topped = CliRunner().invoke(app, [*args, "--trials", "8"])
    assert topped.exit_code == 0, topped.output
    trials = optuna.load_study(study_name="cli", storage=open_storage(str(journal))).trials
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 8
    assert "8 finished" in topped.output

    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    assert c.get_run(victim.user_attrs["dlf.mlflow_run_id"]).info.status == "FAILED"

    export = tmp_path / "cli.best.yaml"
    weights = yaml.safe_load(export.read_text())["overrides"]
    ran = CliRunner().invoke(app, ["run", str(study), "--set-file", str(export), "--tracking-uri", uri,
                                   "--threads", "1"])
    assert ran.exit_code == 0, ran.output
    exp = c.get_experiment_by_name("tunecli")
    (seed_run,) = c.search_runs([exp.experiment_id], filter_string="tags.`dlf.level` = 'seed'")
    assert seed_run.info.status == "FINISHED"
    assert float(seed_run.data.params["loss.lambda_r"]) == pytest.approx(weights["loss.lambda_r"])
    assert float(seed_run.data.params["loss.beta_l"]) == pytest.approx(weights["loss.beta_l"])
