"""`dlf-ablate run`, `plan` and `ui` as a user sees them: output, exit codes, caching, errors."""
from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from dlf.cli import app, main
from dlf.errors import DLFError
from study_fixtures import CODE_VERSION, seed_runs, write_study

runner = CliRunner()


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DLF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DLF_CODE_VERSION", CODE_VERSION)
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path / "home"


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.mark.slow
def test_run_then_rerun_trains_nothing(tmp_path, tiny_mosi, home, monkeypatch, new_store):
    new_store(home / "mlflow.db")
    study = write_study(tmp_path, tiny_mosi, seeds=(5,))
    first = invoke("run", str(study), "--threads", "1")
    assert first.exit_code == 0, first.output
    assert "2 finished, 0 cached, 0 failed" in first.output and "run summary" in first.output
    assert "epoch" not in first.output.split("run summary")[1]  # progress lines are gone by the summary

    def no_training(*a, **k):
        raise AssertionError("a cached study must not train")

    monkeypatch.setattr("dlf.train.loop.train_run", no_training)
    again = invoke("run", str(study))
    assert again.exit_code == 0 and "0 finished, 2 cached, 0 failed" in again.output
    assert len(seed_runs(home / "mlflow.db")) == 2  # no new run either


@pytest.mark.slow
def test_a_failed_run_is_reported_and_sets_the_exit_code(tmp_path, tiny_mosi):
    inline = {"too_big": {"overrides": {"train.accumulation": 50}}}  # 4 micro-batches: never steps
    study = write_study(tmp_path, tiny_mosi, variants=("full", "too_big"), seeds=(1,),
                        extra={"variants_inline": inline})
    result = invoke("run", str(study), "--threads", "1")
    assert result.exit_code == 1
    assert "1 finished, 0 cached, 1 failed" in result.output
    assert "train.accumulation=50" in result.output.split("run summary")[1]  # the one-line reason


def test_plan_lists_keys_status_and_cost_without_creating_a_store(tmp_path, tiny_mosi, home):
    from dlf.study.spec import expand, load_study

    study = write_study(tmp_path, tiny_mosi, seeds=(1,))
    specs = expand(load_study(study))
    fresh = invoke("plan", str(study))
    assert fresh.exit_code == 0, fresh.output
    assert not (home / "mlflow.db").exists()  # a dry run writes nothing
    for spec in specs:
        assert spec.key[:10] in fresh.output
    assert fresh.output.count("pending") >= 2 and "estimate" in fresh.output


@pytest.mark.slow
def test_plan_after_a_run_shows_cached_keys_and_measured_costs(tmp_path, tiny_mosi, home):
    from dlf.study.spec import expand, load_study

    study = write_study(tmp_path, tiny_mosi, seeds=(1,))
    assert invoke("run", str(study), "--threads", "1").exit_code == 0
    cached = invoke("plan", str(study))
    assert "cached" in cached.output and "2 cached" in cached.output
    # Other settings: new keys, costed from the measured runs of the same variants.
    changed = invoke("plan", str(study), "--set", "train.lr=0.01")
    assert "measured (1 runs)" in changed.output and "2 pending" in changed.output
    # A longer schedule: the measured seconds per epoch times the new max_epochs.
    from dlf.study.plan import plan_rows
    from dlf.run.tracking import client, finished_keys

    uri = f"sqlite:///{home}/mlflow.db"
    c = client(uri)
    done = finished_keys(c, c.get_experiment_by_name("tiny").experiment_id).values()
    per_epoch = {r.data.tags["dlf.variant"]: r.data.metrics["train_seconds"] / r.data.metrics["epochs"] for r in done}
    rows, total, _ = plan_rows(expand(load_study(study), set_overrides={"train.max_epochs": 4}), uri)
    assert [r.seconds for r in rows] == pytest.approx([per_epoch[r.spec.variant] * 4 for r in rows])
    assert total == pytest.approx(sum(r.seconds for r in rows))


@pytest.mark.parametrize("args,message", [
    (["run", "no/such/study.yaml"], "study 'no/such/study.yaml' not found"),
    (["run", "quickstart", "--set", "loss.lambda_q=1"], "--set: unknown override path 'loss.lambda_q'"),
    (["run", "quickstart", "--set", "nonsense"], "expected key=value"),
    (["run", "quickstart", "--workers", "0"], "--workers 0"),
    (["plan", "quickstart", "--set-file", "missing.yaml"], "missing.yaml"),
    (["run", "quickstart", "--tracking-uri", "./mlruns"], "file store is not supported"),
])
@pytest.mark.slow
def test_bad_input_is_one_line_and_exit_2(args, message, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["dlf-ablate", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    err = capsys.readouterr().err
    assert stop.value.code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def _refusal(args: list[str], monkeypatch, capsys) -> str:
    monkeypatch.setattr(sys, "argv", ["dlf-ablate", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    out = capsys.readouterr()
    lines = [line for line in (out.out + out.err).splitlines() if line.strip()]
    assert stop.value.code == 2 and len(lines) == 1 and "Traceback" not in out.err, out.out + out.err
    return lines[0]


# The values of issue 16 that used to start a run (and fail it, or record NaN) or raise a traceback.
ISSUE_16 = [
    ("--set", "train.lr=-1", "train.lr=-1.0 is out of range; expected a finite number > 0"),
    ("--set", "train.lr=.nan", "train.lr=nan is out of range"),
    ("--set", "train.lr=inf", "train.lr=inf is out of range"),
    ("--set", "train.eval_batch_size=0", "train.eval_batch_size=0 is out of range; expected an integer in [1, "),
    ("--set", "train.plateau_factor=1.5", "train.plateau_factor=1.5 is out of range; expected a number in (0, 1)"),
    ("--set", "model.d_model=0", "model.d_model=0 is out of range"),
    ("--set", "model.n_heads=0", "model.n_heads=0 is out of range"),
    ("--set", "loss.lambda_r=.nan", "loss.lambda_r=nan is out of range; expected a finite number >= 0"),
    ("--set", "train.clip_value=-0.5", "train.clip_value=-0.5 is out of range; expected a finite number >= 0"),
    ("--set", "model.text_dropout=2", "model.text_dropout=2.0 is out of range; expected a number in [0, 1)"),
    ("seeds", [2**40], "seeds: 1099511627776 is out of range; expected an integer in [0, 4294967295]"),
    ("name", "s" * 600, "name: 600 characters is too long for the tracking store; use at most 100"),
]


@pytest.mark.parametrize("where,value,message", ISSUE_16, ids=[m.split(" is ")[0] for _, _, m in ISSUE_16])
@pytest.mark.slow
def test_plan_and_run_refuse_the_same_bad_values_before_the_store(where, value, message, tmp_path, tiny_mosi,
                                                                    home, monkeypatch, capsys):
    extra = {} if where == "--set" else {where: value}
    study = write_study(tmp_path, tiny_mosi, seeds=(1,), extra=extra)
    args = ["--set", value] if where == "--set" else []
    lines = [_refusal([command, str(study), *args], monkeypatch, capsys) for command in ("plan", "run")]
    assert lines[0] == lines[1] and message in lines[0] and lines[0].startswith("error: ")
    assert not home.exists()  # no store, no lock, no run


@pytest.fixture
def no_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("command,args,message", [
    ("run", ["--devices", "0"], "--devices 0: CUDA is not available on this machine; use --devices cpu"),
    ("run", ["--devices", "0,1", "--workers", "2"], "--devices 0,1: CUDA is not available"),
    ("tune", ["--devices", "0", "--trials", "1"], "--devices 0: CUDA is not available"),
    ("tune", ["--device", "cuda", "--trials", "1"], "--device 'cuda': CUDA is not available"),
])
def test_gpu_options_without_cuda_are_one_line_before_anything_is_written(command, args, message, no_cuda, tmp_path,
                                                                          tiny_mosi, home, monkeypatch, capsys):
    study = write_study(tmp_path, tiny_mosi, seeds=(1,))
    line = _refusal([command, str(study), *args], monkeypatch, capsys)
    assert message in line
    assert not home.exists()


def test_train_with_device_cuda_but_no_cuda_is_one_line(no_cuda, tiny_mosi, monkeypatch, capsys):
    line = _refusal(["train", "-d", str(tiny_mosi), "--device", "cuda"], monkeypatch, capsys)
    assert "--device 'cuda': CUDA is not available" in line


def test_a_gpu_index_past_the_machine_s_gpus_is_refused(tmp_path, tiny_mosi, home, monkeypatch, capsys):
    import torch

    from dlf.run.local import parse_devices

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert parse_devices("1,0") == ["1", "0"] and parse_devices("cpu") == ["cpu"]
    study = write_study(tmp_path, tiny_mosi, seeds=(1,))
    line = _refusal(["run", str(study), "--devices", "0,2"], monkeypatch, capsys)
    assert "--devices 0,2: this machine has 2 GPU(s); use indices 0..1" in line and not home.exists()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")  # indices are then the user's to match
    assert parse_devices("2") == ["2"]


@pytest.mark.slow
def test_ui_command_points_mlflow_at_the_store(tmp_path, tiny_mosi, home):
    from dlf.run.commands import ui_command

    with pytest.raises(DLFError, match="no tracking store"):
        ui_command(None, None, "127.0.0.1", 5001)
    study = write_study(tmp_path, tiny_mosi, seeds=(1,), variants=("full",))
    assert invoke("run", str(study), "--threads", "1").exit_code == 0
    cmd, url = ui_command(str(study), None, "127.0.0.1", 5001)
    uri = f"sqlite:///{home}/mlflow.db"
    assert cmd[:4] == [sys.executable, "-m", "mlflow", "ui"]
    assert cmd[cmd.index("--backend-store-uri") + 1] == uri and cmd[cmd.index("--port") + 1] == "5001"
    assert cmd[cmd.index("--default-artifact-root") + 1] == (home / "mlartifacts").as_uri()
    assert url.startswith("http://127.0.0.1:5001/#/experiments/") and url.endswith("/runs?workflowType=machine_learning")
    assert ui_command(None, "http://server:5000", "127.0.0.1", 5001) == (None, "http://server:5000")


def test_help_documents_every_option():
    for command, options in (("run", ["--set", "--set-file", "--workers", "--devices", "--threads", "--tracking-uri",
                                      "--data-root"]),
                             ("plan", ["--set", "--set-file", "--tracking-uri", "--data-root"]),
                             ("ui", ["--tracking-uri", "--host", "--port"])):
        out = invoke(command, "--help").output
        assert all(o in out for o in options), command
