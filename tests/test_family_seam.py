"""The model seam: a family added in one module (tests/tiny_family.py) plus one catalogue entry trains,
evaluates, is tracked, resumed and reported through the same CLI commands as DLF."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from dlf.config import apply_overrides, build_config, preset, valid_paths
from dlf.errors import DLFError
from dlf.models.registry import FamilySpec, family_names, family_spec, register

TINY = Path(__file__).with_name("tiny_family.py")
ENTRY = [sys.executable, "-c", "from dlf.cli import main; main()"]
CATALOGUE = """name: tiny
group: Baselines
label: Tiny
latex: Tiny
order: 500
description: a linear model over time-means
overrides: {model.family: tiny}
"""


@pytest.fixture
def env(tmp_path):
    cat = tmp_path / "catalogue"
    cat.mkdir()
    (cat / "tiny.yaml").write_text(CATALOGUE)
    return {**os.environ, "DLF_FAMILIES": str(TINY), "DLF_ABLATIONS": str(cat), "DLF_HOME": str(tmp_path / "home"),
            "COLUMNS": "200"}


def cli(env, *args):
    return subprocess.run([*ENTRY, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


def test_dlf_is_the_default_family_and_its_paths_are_unchanged():
    cfg = preset("mosi")
    assert cfg.model.family == "dlf" and "dlf" in family_names()
    assert "loss.lambda_r" in valid_paths() and "model.family" in valid_paths()
    assert family_spec("dlf").label == "DLF"


def test_an_unknown_family_and_a_path_of_another_family_are_one_line_errors(monkeypatch):
    monkeypatch.setenv("DLF_FAMILIES", str(TINY))
    with pytest.raises(DLFError, match=r"unknown model family; known: dlf, (\w+, )*tiny"):
        build_config("mosi", ("--set", {"model.family": "nope"}))
    with pytest.raises(DLFError, match=r"'loss.lambda_r' is a setting of model family dlf, not of 'tiny'"):
        build_config("mosi", ("study set", {"loss.lambda_r": 0}), ("variant tiny", {"model.family": "tiny"}))
    tiny = build_config("mosi", ("variant tiny", {"model.family": "tiny", "loss.mse_weight": 0.5}))
    assert (tiny.model.family, tiny.loss.mse_weight, tiny.train.lr) == ("tiny", 0.5, 0.01)  # its preset's recipe
    back = apply_overrides(tiny, {"model.family": "dlf"})
    assert back.model == preset("mosi").model and back.loss == preset("mosi").loss


def test_register_refuses_sections_that_are_not_frozen_or_do_not_name_the_family():
    @dataclass
    class Loose:
        family: str = "loose"

    @dataclass(frozen=True)
    class Unnamed:
        width: int = 1

    with pytest.raises(DLFError, match="frozen dataclass"):
        register(FamilySpec("loose", Loose, Unnamed, "x:y"))
    with pytest.raises(DLFError, match="family: str = 'unnamed'"):
        register(FamilySpec("unnamed", Unnamed, Unnamed, "x:y"))


@pytest.mark.slow
def test_a_family_from_one_module_runs_through_every_command(tmp_path, env, tiny_mosi):
    listing = cli(env, "ablations")
    assert listing.returncode == 0 and "tiny" in listing.stdout and "Baselines" in listing.stdout
    summary = cli(env, "model", "summary", "--variant", "tiny", "--dataset", "synthetic-mosi", "--json")
    assert json.loads(summary.stdout)["total"] == (768 + 5 + 20) * 4 + 4 + 4 + 1  # hidden + out layers

    ckpt, preds = tmp_path / "tiny.pt", tmp_path / "pred.csv"
    trained = cli(env, "train", "--variant", "tiny", "--dataset", tiny_mosi, "--set", "train.max_epochs=2",
                  "--set", "train.accumulation=1", "--save", ckpt, "--json")
    assert trained.returncode == 0, trained.stderr
    result = json.loads(trained.stdout)
    assert result["epochs"] == 2 and "mae" in result["test"]
    evaluated = cli(env, "evaluate", "--checkpoint", ckpt, "--dataset", tiny_mosi, "--predictions", preds, "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["metrics"]["mae"] == pytest.approx(result["test"]["mae"], abs=1e-6)
    assert len(list(csv.DictReader(preds.open()))) == 27  # every test sample of the tiny pickle

    study = tmp_path / "seam.yaml"
    study.write_text(f"name: seam\ndatasets: [{tiny_mosi}]\nvariants: [tiny]\nseeds: [1, 2]\n"
                     "set: {train.max_epochs: 2, train.accumulation: 1, loss.mse_weight: 0.1}\n")
    first = cli(env, "run", study)
    assert first.returncode == 0 and "2 finished, 0 cached, 0 failed" in first.stdout, first.stdout + first.stderr
    again = cli(env, "run", study)
    assert "0 finished, 2 cached, 0 failed" in again.stdout
    report = cli(env, "report", "seam", "--csv", "--out", tmp_path / "out")
    assert report.returncode == 0, report.stderr
    rows = [r for f in (tmp_path / "out").glob("*.csv") for r in csv.DictReader(f.open())]
    assert any(r.get("variant") == "tiny" or "Tiny" in r.values() for r in rows), rows


TINY_BERT = {"vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
             "intermediate_size": 32, "max_position_embeddings": 16}
DIMS, LENS = {"l": 768, "a": 5, "v": 20}, {"l": 8, "a": 8, "v": 8}


@pytest.mark.parametrize("family", family_names())
def test_every_registered_family_trains_through_the_seam(family):
    """The protocol the trainer, evaluate and model summary use, on every family of the registry: build
    (a BERT family with a tiny BertConfig, no download), forward, named loss terms with a weighted
    total, a backward pass that reaches parameters, the (B,) prediction and a summary that adds up."""
    import torch

    from dlf.models.registry import build_model, implementation, prediction

    cfg = preset("mosi", family)
    bert = cfg.model.text_encoder != "features"
    torch.manual_seed(0)
    model = build_model(cfg, DIMS, LENS, bert_config=TINY_BERT if bert else None).train()
    b = 4
    text = (torch.stack([torch.randint(1, 64, (b, 8)), torch.ones(b, 8, dtype=torch.long),
                         torch.zeros(b, 8, dtype=torch.long)], 1) if bert else torch.randn(b, 8, 768))
    out = model(text, torch.randn(b, 8, 5), torch.randn(b, 8, 20))
    impl = implementation(family)
    terms = impl.loss_terms(out, torch.randn(b), cfg)
    assert terms["total"].ndim == 0 and torch.isfinite(terms["total"])
    terms["total"].backward()
    trained = [p for p in model.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert trained, family
    assert prediction(model, out).shape == (b,)
    summary = impl.summary(model)
    assert summary["total"] == sum(p.numel() for p in model.parameters())
