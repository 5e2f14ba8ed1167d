"""`dlf-ablate train`, `model summary` and `ablations` as a user runs them."""
from __future__ import annotations

import json
import sys

import pytest
import yaml
from typer.testing import CliRunner

from dlf.cli import app, main
from dlf.metrics import METRIC_KEYS

MOSI_FULL, MOSEI_FULL = 1_628_605, 1_576_905
ALIGN_C_MOSI = 3 * (50 * 46 * 50 + 50)  # the triplet projections Linear(50*T', 50) that wo_lm must not build
FAST = ["--set", "data.scale=0.04", "--set", "train.accumulation=1", "--set", "train.max_epochs=2",
        "--set", "model.n_levels=1", "--set", "model.mem_levels=1", "--set", "model.d_model=10",
        "--set", "model.n_heads=2", "--set", "loss.ortho_chunk=10", "--threads", "1", "--device", "cpu"]


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DLF_ABLATIONS", raising=False)
    return tmp_path


def cli(capfd, monkeypatch, *args: str) -> tuple[int, str, str]:
    """The entry point ``main()`` in-process with the file descriptors captured (what a shell would
    see of stdout and stderr): (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["dlf-ablate", *args])
    monkeypatch.setattr("dlf.cli.defer_gc", lambda: None)  # the collector is the test process's, not main's
    monkeypatch.setattr("dlf.cli.freeze_for_exit", lambda: None)
    capfd.readouterr()
    try:
        main()
        code = 0
    except SystemExit as stop:
        code = stop.code or 0
    out = capfd.readouterr()
    return code, out.out, out.err


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


@pytest.mark.slow
def test_train_json_is_one_object_on_stdout_and_save_writes_a_checkpoint(env, capfd, monkeypatch):
    from dlf.train.checkpoint import load_checkpoint

    code, stdout, stderr = cli(capfd, monkeypatch, "train", "--dataset", "synthetic-mosi", "--variant", "l_and_a",
                               "--seed", "3", *FAST, "--save", str(env / "run.pt"), "--json")
    assert code == 0, stderr
    out = json.loads(stdout)  # the whole of stdout is one JSON document
    assert set(out) == {"val", "test", "best_epoch", "epochs"}
    assert set(out["val"]) == set(METRIC_KEYS) == set(out["test"])
    assert out["epochs"] == 2 and 1 <= out["best_epoch"] <= 2
    model, cfg, meta = load_checkpoint(env / "run.pt")
    assert cfg.seed == 3 and cfg.model.modalities == ("l", "a") and cfg.model.n_levels == 1


@pytest.mark.slow
def test_train_prints_a_metrics_table(env):
    stdout = invoke("train", "-d", "synthetic-mosi", "-v", "only_v", *FAST)
    assert "only_v on synthetic-MOSI" in stdout
    for label in ("Acc-7", "Acc-2 (non0)", "F1 (non0)", "Corr", "MAE"):
        assert label in stdout


@pytest.mark.parametrize("args,message", [
    (["train", "-d", "synthetic-mosi", "--set", "loss.lambda_q=0"], "--set: unknown override path 'loss.lambda_q'"),
    (["train", "-d", "synthetic-mosi", "--set", "model.modalities=[x]"], "--set: model.modalities: expected"),
    (["train", "-d", "synthetic-mosi", "--variant", "wo_all"], "unknown variant 'wo_all'; known variants: full"),
    (["model", "summary", "--set", "train.lr"], "--set 'train.lr': expected key=value"),
])
@pytest.mark.slow
def test_bad_input_exits_2_with_one_line(env, capfd, monkeypatch, args, message):
    code, stdout, stderr = cli(capfd, monkeypatch, *args)
    assert code == 2
    assert stderr.startswith(f"error: {message}") and stderr.count("\n") == 1, stderr
    assert stdout == ""


@pytest.mark.slow
def test_model_summary_counts_match_the_official_used_modules():
    mosi = json.loads(invoke("model", "summary", "--json"))
    assert set(mosi) == {"total", "text_encoder", "components"}
    assert (mosi["total"], mosi["text_encoder"]) == (MOSI_FULL, 0)
    assert sum(mosi["components"].values()) == MOSI_FULL
    mosei = json.loads(invoke("model", "summary", "--dataset", "synthetic-mosei", "--json"))
    assert mosei["total"] == MOSEI_FULL
    wo_lm = json.loads(invoke("model", "summary", "--variant", "wo_lm", "--json"))
    assert wo_lm["total"] == MOSI_FULL - ALIGN_C_MOSI
    table = invoke("model", "summary")
    assert f"{MOSI_FULL:,}" in table


@pytest.mark.slow
@pytest.mark.parametrize("dataset,full", [("synthetic-mosi", MOSI_FULL), ("synthetic-mosei", MOSEI_FULL)])
def test_wo_lfa_matched_has_the_full_models_size_and_wo_lfa_does_not(dataset, full):
    def size(variant: str) -> dict:
        return json.loads(invoke("model", "summary", "--variant", variant, "--dataset", dataset, "--json"))

    matched, wo_lfa = size("wo_lfa_matched"), size("wo_lfa")
    assert abs(matched["total"] - full) <= 0.05 * full < wo_lfa["total"] - full, (matched["total"], wo_lfa["total"])
    # only the replacement is narrower (25 wide per modality, its projections included): heads, fusion and
    # the final head are those of wo_lfa's width 2 x 25, the full model's
    assert "crossmodal" in matched["components"] and "lfa" not in matched["components"]
    assert matched["components"]["crossmodal"] < wo_lfa["components"]["crossmodal"] / 3


@pytest.mark.slow
def test_model_summary_set_parses_yaml_values():
    by_set = json.loads(invoke("model", "summary", "--set", "model.modalities=[l, a]", "--json"))
    by_variant = json.loads(invoke("model", "summary", "--variant", "l_and_a", "--json"))
    assert by_set == by_variant and by_set["total"] < MOSI_FULL


@pytest.mark.slow
def test_ablations_lists_catalogue_with_overrides_and_counts(env):
    (env / "ablations").mkdir()
    (env / "ablations" / "half_lr.yaml").write_text(yaml.safe_dump(
        {"name": "half_lr", "label": "lr/2", "group": "Mine", "order": 500, "overrides": {"train.lr": 5e-5}}))
    rows = {r["name"]: r for r in json.loads(invoke("ablations", "--json"))}
    assert rows["full"]["parameters"] == MOSI_FULL and rows["full"]["overrides"] == {}
    assert rows["wo_lm"]["parameters"] == MOSI_FULL - ALIGN_C_MOSI
    assert rows["only_a"]["overrides"] == {"model.modalities": ["a"]}
    assert rows["only_a"]["parameters"] < rows["l_and_a"]["parameters"] < MOSI_FULL
    assert rows["wo_lr"]["parameters"] == MOSI_FULL  # a loss weight removes no module
    assert rows["half_lr"]["parameters"] == MOSI_FULL and rows["half_lr"]["group"] == "Mine"
    table = invoke("ablations")
    assert "model.modalities=[a]" in table and "half_lr" in table


@pytest.mark.slow
def test_model_summary_of_named_unaligned_shapes_equals_a_real_unaligned_file(tiny_mosi_unaligned):
    by_name = json.loads(invoke("model", "summary", "--set", "data.aligned=false", "--json"))
    by_file = json.loads(invoke("model", "summary", "--dataset", str(tiny_mosi_unaligned), "--json"))
    assert by_name == by_file and by_name["total"] > MOSI_FULL  # longer sequences, wider triplet projections
