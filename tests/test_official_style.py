"""The benchmarks' official-style baseline (benchmarks/official_style.py) computes what the official code does.

With the official initial weights (the parity fixture) it must give the official evaluation outputs and
loss terms, and it must train: its speed figures are only a fair baseline if it is the official model.
"""
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from parity_fixture import FIXTURE, inputs, load_data, needs_fixture

from dlf.config import preset
from dlf.train.evaluation import SplitTensors

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [needs_fixture, pytest.mark.slow]  # benchmark code, not the package: out of the fast lane


@pytest.fixture(scope="module")
def official_style():
    spec = importlib.util.spec_from_file_location("official_style", ROOT / "benchmarks" / "official_style.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["official_style"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data():
    return load_data()


def _model(official_style, data):
    torch.manual_seed(0)
    dims = {m: data["train"][k].shape[2] for m, k in (("l", "text"), ("a", "audio"), ("v", "vision"))}
    lens = {m: data["train"][k].shape[1] for m, k in (("l", "text"), ("a", "audio"), ("v", "vision"))}
    model = official_style.OfficialStyleDLF(preset("mosi").model, dims, lens)
    state = torch.load(FIXTURE / "official_state_dict.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)  # every official name, the dead modules included
    return model


def _split(data, name, n=None):
    split = data[name]
    return SplitTensors(*inputs(split, n), labels=torch.as_tensor(split["regression_labels"][:n], dtype=torch.float32))


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_its_outputs_are_the_official_ones(official_style, data, split):
    model = _model(official_style, data).eval()
    official = torch.load(FIXTURE / "official_outputs.pt", map_location="cpu", weights_only=True)[split]
    s = _split(data, split)
    with torch.no_grad():
        out = model(s.text, s.audio, s.vision)
    for name, ref in official.items():
        assert out[name].shape == ref.shape
        assert torch.allclose(out[name], ref, atol=1e-5), f"{split} {name}: max diff {(out[name] - ref).abs().max():.2e}"


def test_its_loss_terms_are_the_official_ones(official_style, data):
    ref = json.loads((FIXTURE / "official_loss_terms.json").read_text())["terms"]
    model = _model(official_style, data).eval()
    s = _split(data, "train", 16)
    with torch.no_grad():
        terms = official_style.official_loss(model(s.text, s.audio, s.vision), s.labels.view(-1, 1))
    assert set(terms) == set(ref)
    for name, value in ref.items():
        assert terms[name].item() == pytest.approx(value, abs=1e-5), name


def test_its_training_epoch_lowers_the_loss(official_style, data):
    model = _model(official_style, data)
    train = _split(data, "train")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = [torch.arange(i, min(i + 4, train.n)) for i in range(0, train.n, 4)]  # 6 micro-batches of 4
    before = official_style.official_evaluate(model, train, batch=8)
    for _ in range(8):
        official_style.official_train_epoch(model, optimizer, train, batches, accumulation=2)
    after = official_style.official_evaluate(model, train, batch=8)
    assert after < before * 0.8
