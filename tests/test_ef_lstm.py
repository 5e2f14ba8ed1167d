"""The ef_lstm family (MMSA 2.2.1's EF_LSTM): parity with the MMSA fixture through the CLI, its loss,
its size, its optimizer group and quirk switch, a short training run and the import's refusals."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import baseline_fixture as fx
from dlf.config import apply_overrides, build_config, preset
from dlf.errors import DLFError
from dlf.models.registry import build_model, implementation

DIMS, LENS = {"l": 768, "a": 5, "v": 20}, {"l": 50, "a": 50, "v": 50}
FIXTURE = fx.needs("EF_LSTM")


@FIXTURE
@pytest.mark.slow
def test_cli_convert_and_evaluate_reproduce_every_mmsa_output(tmp_path):
    got = fx.convert_and_evaluate(tmp_path, "ef_lstm", fx.state_dict("EF_LSTM"), fx.data_path("EF_LSTM"))
    for split, want in fx.outputs("EF_LSTM").items():
        assert set(want) == {"M"}
        assert got[split]["M"].shape == want["M"].shape, split
        np.testing.assert_allclose(got[split]["M"], want["M"], rtol=0, atol=1e-5, err_msg=split)


@FIXTURE
def test_loss_terms_match_mmsa_on_the_first_train_samples():
    from dlf.data.mmsa import load_dataset

    conv = implementation("ef_lstm").convert_official(fx.state_dict("EF_LSTM"), "mosi", dims=DIMS, seq_lens=LENS)
    train = load_dataset(str(fx.data_path("EF_LSTM"))).splits["train"]
    inputs = [torch.as_tensor(np.asarray(x[:8])) for x in (train.text, train.audio, train.vision)]
    with torch.no_grad():
        out = conv.model(*inputs)
        terms = implementation("ef_lstm").loss_terms(out, torch.as_tensor(train.labels[:8]), conv.config)
    want = fx.loss_terms("EF_LSTM")
    assert set(terms) == set(want)
    for name, value in want.items():
        assert float(terms[name]) == pytest.approx(value, abs=1e-5), name


@pytest.mark.parametrize("dataset,total,lstm", [("synthetic-mosi", 885_605, 868_864),
                                                ("synthetic-mosei", 1_754_725, 1_688_576)])
@pytest.mark.slow
def test_model_summary_gives_mmsa_parameter_counts(dataset, total, lstm):
    run = fx.cli("model", "summary", "--variant", "ef_lstm", "--dataset", dataset, "--json")
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout)
    assert info["total"] == total and info["text_encoder"] == 0
    assert info["components"]["lstm"] == lstm and info["components"]["norm"] == 100  # BatchNorm1d(50): 2 x 50


def test_presets_are_mmsa_configs_and_recipe():
    mosi, mosei = preset("mosi", "ef_lstm"), preset("mosei", "ef_lstm")
    assert (mosi.model.hidden_dim, mosi.model.num_layers, mosi.model.dropout) == (128, 4, 0.5)
    assert (mosei.model.hidden_dim, mosei.model.num_layers, mosei.model.dropout) == (256, 2, 0.4)
    assert (mosi.train.batch_size, mosi.train.lr, mosi.train.weight_decay) == (32, 1e-3, 5e-3)
    t = mosei.train
    assert (t.batch_size, t.lr, t.weight_decay) == (128, 5e-3, 1e-4)
    assert (t.accumulation, t.clip_value, t.scheduler) == (1, 0, "none")
    assert (t.val_loss, t.val_decimals, t.patience, t.min_delta) == ("mae", 4, 8, 1e-6)
    assert mosi.data.aligned and mosei.data.aligned and mosi.model.norm_time_steps_as_channels


def batch(n=7, seed=0, dims=DIMS):
    # an odd count: the L1 gradient of out.bias (a mean of +-1 signs) cannot cancel to exactly 0
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 50, dims[m], generator=g) for m in "lav"] + [torch.rand(n, generator=g) * 6 - 3]


def test_every_parameter_gets_a_gradient_and_is_in_the_one_adam_group():
    torch.manual_seed(0)
    cfg = preset("mosi", "ef_lstm")
    model = build_model(cfg, DIMS, LENS).train()
    text, audio, vision, labels = batch()
    impl = implementation("ef_lstm")
    impl.loss_terms(model(text, audio, vision), labels, cfg)["total"].backward()
    groups = impl.param_groups(model, cfg)
    assert len(groups) == 1 and {id(p) for p in groups[0]["params"]} == {id(p) for p in model.parameters()}
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("over_time", [True, False])
@pytest.mark.slow
def test_batchnorm_channels_are_the_time_steps_unless_switched_off(over_time):
    cfg = apply_overrides(preset("mosi", "ef_lstm"), {"model.norm_time_steps_as_channels": over_time})
    model = build_model(cfg, DIMS, LENS).train()
    assert model.norm.num_features == (50 if over_time else 793)
    text, audio, vision, _ = batch(n=8)
    x = torch.cat([text * 3 + 1, audio, vision], dim=-1)  # (B, T, D)
    normed = model.norm(x if over_time else x.transpose(1, 2))
    normed = normed if over_time else normed.transpose(1, 2)
    axes = (0, 2) if over_time else (0, 1)  # MMSA: per time step over batch and features
    torch.testing.assert_close(normed.mean(dim=axes), torch.zeros(normed.shape[1 if over_time else 2]),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(normed.var(dim=axes, unbiased=False), torch.ones_like(normed.mean(dim=axes)),
                               atol=1e-3, rtol=0)


def test_modality_subsets_fuse_only_the_streams_named():
    cfg = apply_overrides(preset("mosi", "ef_lstm"), {"model.modalities": "la"})
    model = build_model(cfg, DIMS, {"l": 50, "a": 50, "v": 375}).eval()  # vision's length is not read
    assert model.lstm.input_size == 773
    text, audio, vision, _ = batch()
    with torch.no_grad():
        assert model(text, audio, vision[:, :1])["M"].shape == (7, 1)


def test_sizes_are_read_from_the_weights():
    cfg = apply_overrides(preset("mosei", "ef_lstm"), {"model.hidden_dim": 8, "model.num_layers": 3})
    dims = {"l": 768, "a": 74, "v": 35}
    state = {f"Model.{k}": v for k, v in build_model(cfg, dims, LENS).state_dict().items()}
    conv = implementation("ef_lstm").convert_official(state, "mosei", dims=dims, seq_lens=LENS)
    assert (conv.config.model.hidden_dim, conv.config.model.num_layers) == (8, 3) and conv.dims == dims
    assert any("model.num_layers=3" in note for note in conv.notes)
    for key, value in conv.model.state_dict().items():
        assert torch.equal(value, state[f"Model.{key}"]), key
    with pytest.raises(DLFError, match=r"fused inputs of width 877, but the dataset gives text 768 \+ audio 5"):
        implementation("ef_lstm").convert_official(state, "mosei", dims=DIMS, seq_lens=LENS)


@pytest.mark.slow
def test_a_state_dict_of_another_family_or_an_incomplete_one_is_refused(tmp_path, tiny_mosi):
    dlf_state = build_model(preset("mosi"), DIMS, LENS).state_dict()
    sd, out = tmp_path / "dlf.pt", tmp_path / "out.pt"
    torch.save(dlf_state, sd)
    run = fx.cli("convert-official", sd, "--family", "ef_lstm", "--dataset", tiny_mosi, "--out", out)
    assert run.returncode == 2 and not out.exists()
    assert run.stderr.count("\n") == 1 and "keys are not part of MMSA's EF_LSTM" in run.stderr, run.stderr
    state = {f"Model.{k}": v for k, v in build_model(preset("mosi", "ef_lstm"), DIMS, LENS).state_dict().items()}
    del state["Model.out.bias"]
    with pytest.raises(DLFError, match=r"1 tensors of MMSA's EF_LSTM are missing: Model\.out\.bias"):
        implementation("ef_lstm").convert_official(state, "mosi", dims=DIMS, seq_lens=LENS)


@FIXTURE
@pytest.mark.slow
def test_unaligned_data_is_refused_in_one_line(tmp_path):
    sd, out = tmp_path / "ef.pt", tmp_path / "out.pt"
    torch.save(fx.state_dict("EF_LSTM"), sd)
    run = fx.cli("convert-official", sd, "--family", "ef_lstm", "--dataset", fx.ROOT / "data_unaligned.pkl",
                 "--out", out)
    assert run.returncode == 2 and not out.exists() and run.stderr.count("\n") == 1, run.stderr
    assert "needs aligned data, but the dataset's streams have text 50, audio 375, vision 500 steps" in run.stderr


def test_configs_ef_lstm_cannot_run_are_one_line_errors():
    with pytest.raises(DLFError, match="model.dropout must be in"):
        build_config("mosi", ("--set", {"model.family": "ef_lstm", "model.dropout": 1.0}))
    with pytest.raises(DLFError, match="model.num_layers must be >= 1"):
        build_config("mosi", ("--set", {"model.family": "ef_lstm", "model.num_layers": 0}))
    with pytest.raises(DLFError, match="^--set: train.accumulation=4: ef_lstm needs 1"):  # when the config is built
        build_config("mosi", ("--set", {"model.family": "ef_lstm", "train.accumulation": 4}))


@pytest.mark.slow
def test_a_short_training_run_through_the_cli(tmp_path, tiny_mosi, tiny_mosi_unaligned):
    env = {**os.environ, "DLF_HOME": str(tmp_path / "home")}
    run = fx.cli("train", "--variant", "ef_lstm", "--dataset", tiny_mosi, "--set", "train.max_epochs=2",
                 "--threads", "1", "--device", "cpu", "--json", env=env)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["epochs"] == 2 and np.isfinite(result["test"]["mae"])
    bad = fx.cli("train", "--variant", "ef_lstm", "--dataset", tiny_mosi_unaligned, "--set", "train.max_epochs=1",
                 "--device", "cpu", env=env)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ef_lstm concatenates"), bad.stderr
    assert bad.stderr.count("\n") == 1


def test_the_search_space_file_is_mmsa_grid_and_holds_both_presets():
    from dlf.tune.space import load_space

    space = load_space(Path(__file__).resolve().parents[1] / "spaces" / "ef_lstm.yaml", preset("mosi", "ef_lstm"))
    assert set(space.paths) == {"model.hidden_dim", "model.num_layers", "model.dropout", "train.batch_size",
                                "train.lr", "train.weight_decay"}
    for corpus in ("mosi", "mosei"):  # MMSA's own defaults are points of its grid
        assert set(space.baseline(preset(corpus, "ef_lstm"))) == set(space.paths), corpus
