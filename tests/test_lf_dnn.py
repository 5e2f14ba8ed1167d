"""The lf_dnn family (MMSA 2.2.1's LF_DNN): parity with the MMSA fixture through the CLI, its loss,
its size, its optimizer group and quirk switches, a short training run and the import's refusals."""
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
from dlf.models.mmsa_common import time_mean
from dlf.models.registry import build_model, implementation

DIMS, LENS = {"l": 768, "a": 5, "v": 20}, {"l": 50, "a": 375, "v": 500}
FIXTURE = fx.needs("LF_DNN")
FEATURES = {"Feature_t": 256, "Feature_a": 16, "Feature_v": 128, "Feature_f": 400, "M": 1}


@FIXTURE
@pytest.mark.slow
def test_cli_convert_and_evaluate_reproduce_every_mmsa_output(tmp_path):
    got = fx.convert_and_evaluate(tmp_path, "lf_dnn", fx.state_dict("LF_DNN"), fx.data_path("LF_DNN"))
    for split, want in fx.outputs("LF_DNN").items():
        assert {k: v.shape[1] for k, v in want.items()} == FEATURES
        for name, value in want.items():
            assert got[split][name].shape == value.shape, (split, name)
            np.testing.assert_allclose(got[split][name], value, rtol=0, atol=1e-5, err_msg=f"{split} {name}")


@FIXTURE
def test_loss_terms_match_mmsa_on_the_first_train_samples():
    from dlf.data.mmsa import load_dataset

    conv = implementation("lf_dnn").convert_official(fx.state_dict("LF_DNN"), "mosi", dims=DIMS, seq_lens=LENS)
    train = load_dataset(str(fx.data_path("LF_DNN"))).splits["train"]
    inputs = [torch.as_tensor(np.asarray(x[:8])) for x in (train.text, train.audio, train.vision)]
    with torch.no_grad():
        out = conv.model(*inputs)
        terms = implementation("lf_dnn").loss_terms(out, torch.as_tensor(train.labels[:8]), conv.config)
    want = fx.loss_terms("LF_DNN")
    assert set(terms) == set(want)
    for name, value in want.items():
        assert float(terms[name]) == pytest.approx(value, abs=1e-5), name


@pytest.mark.parametrize("dataset,total,text", [("synthetic-mosi", 597_171, 492_800),
                                                ("synthetic-mosei", 572_283, 476_288)])
@pytest.mark.slow
def test_model_summary_gives_mmsa_parameter_counts(dataset, total, text):
    run = fx.cli("model", "summary", "--variant", "lf_dnn", "--dataset", dataset, "--json")
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout)
    assert info["total"] == total and info["text_encoder"] == 0 and info["components"]["text_subnet"] == text


def test_presets_are_mmsa_configs_and_recipe():
    mosi, mosei = preset("mosi", "lf_dnn").model, preset("mosei", "lf_dnn").model
    assert (mosi.text_hidden, mosi.audio_hidden, mosi.video_hidden, mosi.text_out, mosi.post_fusion_dim) == (
        128, 16, 128, 256, 128)
    assert (mosei.text_hidden, mosei.audio_hidden, mosei.video_hidden, mosei.text_out, mosei.post_fusion_dim) == (
        128, 32, 128, 128, 128)
    assert (mosei.audio_dropout, mosei.video_dropout, mosei.text_dropout, mosei.post_fusion_dropout) == (0.2,) * 4
    t = preset("mosei", "lf_dnn").train
    assert (t.batch_size, t.lr, t.weight_decay) == (64, 2e-3, 1e-3)
    assert (t.accumulation, t.clip_value, t.scheduler) == (1, 0, "none")
    assert (t.val_loss, t.val_decimals, t.patience, t.min_delta) == ("mae", 4, 8, 1e-6)
    t = preset("mosi", "lf_dnn").train
    assert (t.batch_size, t.lr, t.weight_decay) == (128, 1e-3, 1e-2) and not preset("mosi", "lf_dnn").data.aligned


def batch(n=7, seed=0):
    """An odd count: the L1 gradient of the output bias (a mean of +-1 signs) cannot cancel to 0."""
    g = torch.Generator().manual_seed(seed)
    audio, vision = torch.randn(n, 375, 5, generator=g), torch.randn(n, 500, 20, generator=g)
    audio[:, 200:] = 0  # padded tails, as in an unaligned file
    vision[:, 300:] = 0
    return torch.randn(n, 50, 768, generator=g), audio, vision, torch.rand(n, generator=g) * 6 - 3


def test_every_parameter_gets_a_gradient_and_is_in_the_one_adam_group():
    torch.manual_seed(0)
    cfg = preset("mosi", "lf_dnn")
    model = build_model(cfg, DIMS, LENS).train()
    text, audio, vision, labels = batch()
    impl = implementation("lf_dnn")
    impl.loss_terms(model(text, audio, vision), labels, cfg)["total"].backward()
    groups = impl.param_groups(model, cfg)
    assert len(groups) == 1 and {id(p) for p in groups[0]["params"]} == {id(p) for p in model.parameters()}
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_fusion_is_audio_video_text_in_that_order_and_text_dropout_is_dead_by_default():
    text, audio, vision, _ = batch()
    torch.manual_seed(0)
    model = build_model(preset("mosi", "lf_dnn"), DIMS, LENS)
    with torch.no_grad():
        out = model.eval()(text, audio, vision)
        train_t = model.train()(text, audio, vision)["Feature_t"]
    torch.testing.assert_close(out["Feature_f"], torch.cat([out["Feature_a"], out["Feature_v"], out["Feature_t"]], 1))
    torch.testing.assert_close(train_t, out["Feature_t"])  # MMSA forces the text dropout to 0
    applied = build_model(apply_overrides(preset("mosi", "lf_dnn"), {"model.text_dropout_applied": True}), DIMS, LENS)
    applied.load_state_dict(model.state_dict())
    with torch.no_grad():
        dropped = applied.train()(text, audio, vision)["Feature_t"]
    assert not torch.allclose(dropped, out["Feature_t"])


def test_time_mean_runs_over_the_padding_unless_switched_off():
    _, audio, vision, _ = batch()
    torch.testing.assert_close(time_mean(audio), audio.sum(1) / 375)  # MMSA: padding shrinks the mean
    torch.testing.assert_close(time_mean(audio, over_padding=False), audio[:, :200].mean(1))
    torch.testing.assert_close(time_mean(torch.zeros(2, 7, 3), over_padding=False), torch.zeros(2, 3))
    cfg = apply_overrides(preset("mosi", "lf_dnn"), {"model.time_mean_over_padding": False})
    model = build_model(cfg, DIMS, LENS).eval()
    with torch.no_grad():
        a = model.audio_subnet(audio[:, :200].mean(1))
        torch.testing.assert_close(model(batch()[0], audio, vision)["Feature_a"], a)


def test_modality_subsets_build_and_fuse_only_the_subnets_named():
    cfg = apply_overrides(preset("mosi", "lf_dnn"), {"model.modalities": "lv"})
    model = build_model(cfg, DIMS, LENS).eval()
    assert not hasattr(model, "audio_subnet") and model.post_fusion_layer_1.in_features == 128 + 256
    with torch.no_grad():
        out = model(*batch()[:3])
    assert set(out) == {"Feature_t", "Feature_v", "Feature_f", "M"} and out["M"].shape == (7, 1)


def test_a_batch_of_one_sample_is_evaluated_with_the_running_statistics():
    # training on one is refused before the run starts (tests/test_mmsa_families.py)
    model = build_model(preset("mosi", "lf_dnn"), DIMS, LENS).train()
    text, audio, vision, _ = batch(n=1)
    with torch.no_grad():
        assert model.eval()(text, audio, vision)["M"].shape == (1, 1)  # evaluation uses running statistics


def test_sizes_are_read_from_the_weights():
    cfg = apply_overrides(preset("mosei", "lf_dnn"), {"model.text_out": 8, "model.audio_hidden": 4,
                                                      "model.text_hidden": 6, "model.post_fusion_dim": 5})
    dims = {"l": 768, "a": 74, "v": 35}
    state = {f"Model.{k}": v for k, v in build_model(cfg, dims, LENS).state_dict().items()}
    conv = implementation("lf_dnn").convert_official(state, "mosei", dims=DIMS, seq_lens=LENS)
    m = conv.config.model
    assert (m.text_out, m.audio_hidden, m.text_hidden, m.post_fusion_dim) == (8, 4, 6, 5) and conv.dims == dims
    assert any("model.text_out=8" in note for note in conv.notes)
    for key, value in conv.model.state_dict().items():
        assert torch.equal(value, state[f"Model.{key}"]), key


@pytest.mark.slow
def test_a_state_dict_of_another_family_or_an_incomplete_one_is_refused(tmp_path, tiny_mosi_unaligned):
    ef_state = build_model(preset("mosi", "ef_lstm"), DIMS, {"l": 50, "a": 50, "v": 50}).state_dict()
    sd, out = tmp_path / "ef_lstm.pt", tmp_path / "out.pt"
    torch.save({f"Model.{k}": v for k, v in ef_state.items()}, sd)
    run = fx.cli("convert-official", sd, "--family", "lf_dnn", "--dataset", tiny_mosi_unaligned, "--out", out)
    assert run.returncode == 2 and not out.exists()
    assert run.stderr.count("\n") == 1 and "keys are not part of MMSA's LF_DNN: Model.linear.bias" in run.stderr
    state = {f"Model.{k}": v for k, v in build_model(preset("mosi", "lf_dnn"), DIMS, LENS).state_dict().items()}
    del state["Model.audio_subnet.norm.running_var"]
    missing = r"1 tensors of MMSA's LF_DNN are missing: Model\.audio_subnet\.norm\.running_var"
    with pytest.raises(DLFError, match=missing):
        implementation("lf_dnn").convert_official(state, "mosi", dims=DIMS, seq_lens=LENS)


def test_configs_lf_dnn_cannot_run_are_one_line_errors():
    with pytest.raises(DLFError, match="model.post_fusion_dropout must be in"):
        build_config("mosi", ("--set", {"model.family": "lf_dnn", "model.post_fusion_dropout": 1.0}))
    with pytest.raises(DLFError, match="model.text_out must be >= 1"):
        build_config("mosi", ("--set", {"model.family": "lf_dnn", "model.text_out": 0}))
    with pytest.raises(DLFError, match="^--set: train.accumulation=3: lf_dnn needs 1"):  # when the config is built
        build_config("mosi", ("--set", {"model.family": "lf_dnn", "train.accumulation": 3}))


@pytest.mark.slow
def test_a_short_training_run_through_the_cli(tmp_path, tiny_mosi_unaligned):
    env = {**os.environ, "DLF_HOME": str(tmp_path / "home")}
    run = fx.cli("train", "--variant", "lf_dnn", "--dataset", tiny_mosi_unaligned, "--set", "train.max_epochs=2",
                 "--threads", "1", "--device", "cpu", "--json", env=env)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["epochs"] == 2 and np.isfinite(result["test"]["mae"])
    bad = fx.cli("train", "--variant", "lf_dnn", "--dataset", tiny_mosi_unaligned, "--set", "train.batch_size=25",
                 "--set", "train.max_epochs=1", "--device", "cpu", env=env)  # 51 samples: 25 + 25 + 1
    assert bad.returncode == 2 and bad.stderr.startswith("error: train.batch_size=25: the 51 training samples"), bad.stderr
    assert bad.stderr.count("\n") == 1


def test_the_search_space_file_samples_only_valid_lf_dnn_configs():
    from dlf.tune.space import load_space

    space = load_space(Path(__file__).resolve().parents[1] / "spaces" / "lf_dnn.yaml", preset("mosi", "lf_dnn"))
    assert {"model.text_out", "model.post_fusion_dim", "train.lr", "train.weight_decay"} <= set(space.paths)
    for corpus in ("mosi", "mosei"):  # MMSA's own defaults are points of its grid
        assert set(space.baseline(preset(corpus, "lf_dnn"))) == set(space.paths), corpus
