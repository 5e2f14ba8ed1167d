"""The tfn family (MMSA 2.2.1's TFN): parity with the MMSA fixture through the CLI, its loss, its size,
its optimizer groups and quirk switches, a short training run and the import's refusals."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import baseline_fixture as fx
from dlf.config import apply_overrides, build_config, preset
from dlf.errors import DLFError
from dlf.models.registry import build_model, implementation
from dlf.models.mmsa_common import time_mean
from dlf.models.tfn.model import tensor_fusion

MOSI_DIMS, MOSI_LENS = {"l": 768, "a": 5, "v": 20}, {"l": 50, "a": 375, "v": 500}
FIXTURE = fx.needs("TFN")


def mmsa_state() -> dict[str, torch.Tensor]:
    """The float32 state_dict MMSA's TFN had: the fixture's, plus post_fusion_layer_1.weight decoded
    from its int8 side file (README 1.1: codes * 2**-15, exact)."""
    state = fx.state_dict("TFN")
    side = torch.load(fx.ROOT / "TFN" / "post_fusion_layer_1_weight_int8.pt", map_location="cpu", weights_only=True)
    state["Model.post_fusion_layer_1.weight"] = side["codes"].float() * side["scale"]
    return state


def fusion_from_factors(out: dict[str, np.ndarray]) -> np.ndarray:
    """README 1.2: flatten over (a, v, t) of outer([1, Feature_a], [1, Feature_v], [1, Feature_t])."""
    z = {m: np.concatenate([np.ones((len(out["M"]), 1), np.float32), out[f"Feature_{m}"]], 1) for m in "avt"}
    return np.einsum("na,nv,nt->navt", z["a"], z["v"], z["t"]).reshape(len(out["M"]), -1)


@FIXTURE
@pytest.mark.slow
def test_cli_convert_and_evaluate_reproduce_every_mmsa_output(tmp_path):
    got = fx.convert_and_evaluate(tmp_path, "tfn", mmsa_state(), fx.data_path("TFN"))
    for split, want in fx.outputs("TFN").items():
        assert set(want) == {"Feature_t", "Feature_a", "Feature_v", "M"}
        for name, value in want.items():
            assert got[split][name].shape == value.shape, (split, name)
            np.testing.assert_allclose(got[split][name], value, rtol=0, atol=1e-5, err_msg=f"{split} {name}")
        # Feature_f is not stored (140,481 values a sample): rebuild it from MMSA's own factors
        assert got[split]["Feature_f"].shape == (len(want["M"]), 33 * 129 * 33)
        np.testing.assert_allclose(got[split]["Feature_f"], fusion_from_factors(want), rtol=0, atol=1e-5)


@FIXTURE
def test_loss_terms_match_mmsa_on_the_first_train_samples():
    conv = implementation("tfn").convert_official(mmsa_state(), "mosi", dims=MOSI_DIMS, seq_lens=MOSI_LENS)
    from dlf.data.mmsa import load_dataset

    train = load_dataset(str(fx.data_path("TFN"))).splits["train"]
    inputs = [torch.as_tensor(np.asarray(x[:8])) for x in (train.text, train.audio, train.vision)]
    with torch.no_grad():
        terms = implementation("tfn").loss_terms(conv.model(*inputs), torch.as_tensor(train.labels[:8]), conv.config)
    want = fx.loss_terms("TFN")
    assert set(terms) == set(want)
    for name, value in want.items():
        assert float(terms[name]) == pytest.approx(value, abs=1e-5), name


@pytest.mark.parametrize("dataset,total", [("synthetic-mosi", 9_497_045), ("synthetic-mosei", 5_042_541)])
@pytest.mark.slow
def test_model_summary_gives_mmsa_parameter_counts(dataset, total):
    run = fx.cli("model", "summary", "--variant", "tfn", "--dataset", dataset, "--json")
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout)
    assert info["total"] == total and info["text_encoder"] == 0
    assert info["components"]["output_range"] == info["components"]["output_shift"] == 1


def test_mosei_preset_is_mmsa_mosei_config_and_recipe():
    m, t = preset("mosei", "tfn").model, preset("mosei", "tfn").train
    assert (m.text_hidden, m.audio_hidden, m.video_hidden, m.text_out, m.post_fusion_dim) == (128, 16, 128, 128, 16)
    assert (m.audio_dropout, m.video_dropout, m.text_dropout, m.post_fusion_dropout) == (0.4,) * 4
    assert (t.batch_size, t.lr, t.weight_decay, t.accumulation, t.clip_value, t.scheduler) == (128, 5e-3, 0, 1, 0, "none")
    assert (t.val_loss, t.val_decimals, t.patience, t.min_delta) == ("mae", 4, 8, 1e-6)
    assert preset("mosi", "tfn").data.aligned is False and preset("mosi", "tfn").train.batch_size == 32


def tiny_batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    audio, vision = torch.randn(n, 375, 5, generator=g), torch.randn(n, 500, 20, generator=g)
    audio[:, 200:] = 0  # padded tails, as in an unaligned file
    vision[:, 300:] = 0
    return torch.randn(n, 50, 768, generator=g), audio, vision, torch.rand(n, generator=g) * 6 - 3


def test_every_optimised_parameter_gets_a_gradient_and_the_output_scaling_is_frozen():
    torch.manual_seed(0)
    cfg = preset("mosi", "tfn")
    model = build_model(cfg, MOSI_DIMS, MOSI_LENS).train()
    text, audio, vision, labels = tiny_batch()
    impl = implementation("tfn")
    impl.loss_terms(model(text, audio, vision), labels, cfg)["total"].backward()
    groups = impl.param_groups(model, cfg)
    optimised = {id(p) for g in groups for p in g["params"]}
    for name, p in model.named_parameters():
        if name in ("output_range", "output_shift"):
            assert not p.requires_grad and p.grad is None and id(p) not in optimised, name
        else:
            assert id(p) in optimised and p.grad is not None and p.grad.abs().sum() > 0, name
    assert len(groups) == 1 and len(groups[0]["params"]) == len(list(model.parameters())) - 2


def test_quirk_switches_change_what_they_name():
    text, audio, vision, _ = tiny_batch()
    torch.manual_seed(0)
    ref = build_model(preset("mosi", "tfn"), MOSI_DIMS, MOSI_LENS).eval()
    raw = build_model(apply_overrides(preset("mosi", "tfn"), {"model.bounded_output": False}), MOSI_DIMS, MOSI_LENS)
    raw.load_state_dict(ref.state_dict())
    raw.eval()
    with torch.no_grad():
        bounded, unbounded = ref(text, audio, vision)["M"], raw.eval()(text, audio, vision)["M"]
    torch.testing.assert_close(bounded, torch.sigmoid(unbounded) * 6 - 3)
    # the time mean over the padding (MMSA) vs over each stream's own frames
    torch.testing.assert_close(time_mean(audio), audio.sum(1) / 375)
    torch.testing.assert_close(time_mean(audio, over_padding=False), audio[:, :200].mean(1))
    torch.testing.assert_close(time_mean(torch.zeros(2, 7, 3), over_padding=False), torch.zeros(2, 3))


def test_tensor_fusion_is_the_flattened_outer_product_in_mmsa_order():
    a, v, t = torch.randn(3, 4), torch.randn(3, 2), torch.randn(3, 5)
    fused = tensor_fusion(a, v, t).reshape(3, 5, 3, 6)
    one = torch.ones(3, 1)
    za, zv, zt = torch.cat([one, a], 1), torch.cat([one, v], 1), torch.cat([one, t], 1)
    torch.testing.assert_close(fused, torch.einsum("na,nv,nt->navt", za, zv, zt))
    torch.testing.assert_close(fused[:, 0, 0, 1:], t)  # the unimodal text features survive the fusion


def test_sizes_are_read_from_the_weights():
    cfg = apply_overrides(preset("mosei", "tfn"), {"model.text_out": 8, "model.audio_hidden": 4, "model.video_hidden": 6})
    dims = {"l": 768, "a": 74, "v": 35}
    state = {f"Model.{k}": v for k, v in build_model(cfg, dims, MOSI_LENS).state_dict().items()}
    conv = implementation("tfn").convert_official(state, "mosei", dims=dims, seq_lens=MOSI_LENS)
    m = conv.config.model
    assert (m.text_out, m.audio_hidden, m.video_hidden, m.post_fusion_dim) == (8, 4, 6, 16) and conv.dims == dims
    assert any("model.text_out=8" in note for note in conv.notes)
    for key, value in conv.model.state_dict().items():
        assert torch.equal(value, state[f"Model.{key}"]), key


@pytest.mark.slow
def test_a_state_dict_of_another_family_or_an_incomplete_one_is_refused(tmp_path, tiny_mosi_unaligned):
    dlf_state = build_model(preset("mosi"), MOSI_DIMS, {"l": 50, "a": 50, "v": 50}).state_dict()
    sd, out = tmp_path / "dlf.pt", tmp_path / "out.pt"
    torch.save(dlf_state, sd)
    run = fx.cli("convert-official", sd, "--family", "tfn", "--dataset", tiny_mosi_unaligned, "--out", out)
    assert run.returncode == 2 and not out.exists()
    assert run.stderr.count("\n") == 1 and "keys are not part of MMSA's TFN" in run.stderr, run.stderr
    state = {f"Model.{k}": v for k, v in build_model(preset("mosi", "tfn"), MOSI_DIMS, MOSI_LENS).state_dict().items()}
    del state["Model.post_fusion_layer_1.weight"]
    with pytest.raises(DLFError, match=r"1 tensors of MMSA's TFN are missing: Model\.post_fusion_layer_1\.weight"):
        implementation("tfn").convert_official(state, "mosi", dims=MOSI_DIMS, seq_lens=MOSI_LENS)


def test_configs_tfn_cannot_run_are_one_line_errors():
    with pytest.raises(DLFError, match=r"model.modalities=\['l', 'a'\]: tfn fuses all three"):
        build_config("mosi", ("variant tfn", {"model.family": "tfn", "model.modalities": ["l", "a"]}))
    with pytest.raises(DLFError, match="model.post_fusion_dropout must be in"):
        build_config("mosi", ("--set", {"model.family": "tfn", "model.post_fusion_dropout": 1.0}))
    with pytest.raises(DLFError, match="^--set: train.accumulation=4: tfn needs 1"):  # when the config is built
        build_config("mosi", ("--set", {"model.family": "tfn", "train.accumulation": 4}))


@pytest.mark.slow
def test_a_short_training_run_through_the_cli(tmp_path, tiny_mosi_unaligned):
    env = {**os.environ, "DLF_HOME": str(tmp_path / "home")}
    run = fx.cli("train", "--variant", "tfn", "--dataset", tiny_mosi_unaligned, "--set", "train.max_epochs=2",
                 "--threads", "1", "--device", "cpu", "--json", env=env)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["epochs"] == 2 and np.isfinite(result["test"]["mae"])
    bad = fx.cli("train", "--variant", "tfn", "--dataset", tiny_mosi_unaligned, "--set", "train.accumulation=2",
                 "--set", "train.max_epochs=1", "--device", "cpu", env=env)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --set: train.accumulation=2: tfn needs 1"), bad.stderr
    assert bad.stderr.count("\n") == 1


def test_the_search_space_file_samples_only_valid_tfn_configs():
    from pathlib import Path

    from dlf.tune.space import load_space

    space = load_space(Path(__file__).resolve().parents[1] / "spaces" / "tfn.yaml", preset("mosi", "tfn"))
    assert {"model.text_out", "model.post_fusion_dim", "train.lr"} <= set(space.paths)
    for corpus in ("mosi", "mosei"):  # MMSA's own defaults are points of its grid
        assert set(space.baseline(preset(corpus, "tfn"))) == set(space.paths), corpus
