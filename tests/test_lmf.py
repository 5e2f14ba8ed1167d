"""The lmf family (MMSA 2.2.1's LMF): parity with the MMSA fixture through the CLI, its loss, its size,
its two optimizer groups and the never-trained fusion weights, a short training run and the import's
refusals."""
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

MOSI_DIMS, MOSI_LENS = {"l": 768, "a": 5, "v": 20}, {"l": 50, "a": 375, "v": 500}
FIXTURE = fx.needs("LMF")


@FIXTURE
@pytest.mark.slow
def test_cli_convert_and_evaluate_reproduce_every_mmsa_output(tmp_path):
    got = fx.convert_and_evaluate(tmp_path, "lmf", fx.state_dict("LMF"), fx.data_path("LMF"))
    for split, want in fx.outputs("LMF").items():
        assert set(want) == {"Feature_t", "Feature_a", "Feature_v", "Feature_f", "M"} and set(want) <= set(got[split])
        for name, value in want.items():
            assert got[split][name].shape == value.shape, (split, name)
            np.testing.assert_allclose(got[split][name], value, rtol=0, atol=1e-5, err_msg=f"{split} {name}")


@FIXTURE
def test_loss_terms_match_mmsa_on_the_first_train_samples():
    conv = implementation("lmf").convert_official(fx.state_dict("LMF"), "mosi", dims=MOSI_DIMS, seq_lens=MOSI_LENS)
    from dlf.data.mmsa import load_dataset

    train = load_dataset(str(fx.data_path("LMF"))).splits["train"]
    inputs = [torch.as_tensor(np.asarray(x[:8])) for x in (train.text, train.audio, train.vision)]
    with torch.no_grad():
        terms = implementation("lmf").loss_terms(conv.model(*inputs), torch.as_tensor(train.labels[:8]), conv.config)
    want = fx.loss_terms("LMF")
    assert set(terms) == set(want)
    for name, value in want.items():
        assert float(terms[name]) == pytest.approx(value, abs=1e-5), name


@pytest.mark.parametrize("dataset,total", [("synthetic-mosi", 505_071), ("synthetic-mosei", 508_475)])
@pytest.mark.slow
def test_model_summary_gives_mmsa_parameter_counts(dataset, total):
    run = fx.cli("model", "summary", "--variant", "lmf", "--dataset", dataset, "--json")
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout)
    assert info["total"] == total and info["text_encoder"] == 0
    assert info["components"]["fusion_bias"] == 1 and info["components"]["text_subnet"] == 468_032  # text_out 64


def test_presets_are_mmsa_configs_and_recipes():
    mosi, mosei = preset("mosi", "lmf"), preset("mosei", "lmf")
    assert (mosi.model.rank, mosi.model.audio_dropout, mosei.model.rank, mosei.model.video_dropout) == (3, 0.3, 4, 0.2)
    assert (mosi.train.batch_size, mosi.train.lr, mosi.model.factor_lr, mosi.train.weight_decay) == (64, 1e-3, 1e-3, 5e-3)
    assert (mosei.train.batch_size, mosei.train.lr, mosei.model.factor_lr, mosei.train.weight_decay) == (32, 1e-3, 1e-3, 1e-3)
    t = mosei.train
    assert (t.accumulation, t.clip_value, t.scheduler, t.val_loss, t.val_decimals, t.patience) == (1, 0, "none", "mae", 4, 8)
    assert mosi.data.aligned is False


def tiny_batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    audio, vision = torch.randn(n, 375, 5, generator=g), torch.randn(n, 500, 20, generator=g)
    audio[:, 200:] = 0
    return torch.randn(n, 50, 768, generator=g), audio, vision, torch.rand(n, generator=g) * 6 - 3


@pytest.mark.parametrize("train_fusion", [False, True])
def test_optimizer_groups_are_mmsa_and_every_parameter_gets_a_gradient(train_fusion):
    torch.manual_seed(0)
    cfg = apply_overrides(preset("mosi", "lmf"), {"model.factor_lr": 3e-4, "model.train_fusion_weights": train_fusion})
    model = build_model(cfg, MOSI_DIMS, MOSI_LENS).train()
    text, audio, vision, labels = tiny_batch()
    impl = implementation("lmf")
    impl.loss_terms(model(text, audio, vision), labels, cfg)["total"].backward()
    for name, p in model.named_parameters():  # MMSA's fusion weights get gradients; only no step uses them
        assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
    rest, factors = impl.param_groups(model, cfg)
    assert "lr" not in rest and factors["lr"] == 3e-4  # rest: train.lr; both: Adam's train.weight_decay
    assert [id(p) for p in factors["params"]] == [id(model.audio_factor), id(model.video_factor), id(model.text_factor)]
    fusion = {id(model.fusion_weights), id(model.fusion_bias)}
    subnets = {id(p) for n, p in model.named_parameters() if n.split(".")[0].endswith("_subnet")}
    assert {id(p) for p in rest["params"]} == subnets | (fusion if train_fusion else set())


@pytest.mark.parametrize("train_fusion", [False, True])
@pytest.mark.slow
def test_fusion_weights_stay_at_their_initial_values_unless_switched_on(tiny_mosi_unaligned, train_fusion):
    from dlf.data.mmsa import load_dataset
    from dlf.train.loop import Runtime, seed_everything, train_run

    cfg = apply_overrides(preset("mosi", "lmf"), {"train.max_epochs": 2, "train.batch_size": 16,
                                                  "model.train_fusion_weights": train_fusion})
    data = load_dataset(str(tiny_mosi_unaligned))
    result = train_run(cfg, data, Runtime(device="cpu", threads=1, progress=False))
    seed_everything(cfg.seed)  # the trainer builds its model right after seeding: the same initial weights
    initial = build_model(cfg, data.dims, data.seq_lens).state_dict()
    assert not torch.equal(result.state_dict["audio_factor"], initial["audio_factor"])
    for name in ("fusion_weights", "fusion_bias"):
        assert torch.equal(result.state_dict[name], initial[name]) == (not train_fusion), name


def test_fusion_is_the_rank_r_factorisation_of_the_tensor_product():
    torch.manual_seed(0)
    model = build_model(preset("mosi", "lmf"), MOSI_DIMS, MOSI_LENS).eval()
    with torch.no_grad():
        out = model(*tiny_batch()[:3])
    one = torch.ones(6, 1)
    z = {m: torch.cat([one, out[f"Feature_{m}"]], 1) for m in "avt"}
    w = {m: getattr(model, f"{n}_factor")[:, :, 0] for m, n in (("a", "audio"), ("v", "video"), ("t", "text"))}
    zy = torch.stack([(z["a"] @ w["a"][r]) * (z["v"] @ w["v"][r]) * (z["t"] @ w["t"][r]) for r in range(3)], 1)
    torch.testing.assert_close(out["Feature_f"], zy)
    torch.testing.assert_close(out["M"], zy @ model.fusion_weights.detach().t() + model.fusion_bias.detach())
    assert out["Feature_t"].shape == (6, 64)  # text_hidden // 2


@pytest.mark.slow
def test_a_state_dict_of_another_family_is_refused_and_sizes_are_read_from_the_weights(tmp_path, tiny_mosi_unaligned):
    small_tfn = apply_overrides(preset("mosi", "tfn"), {"model.text_out": 4, "model.audio_hidden": 4,
                                                        "model.video_hidden": 4, "model.post_fusion_dim": 4})
    sd, out = tmp_path / "tfn.pt", tmp_path / "out.pt"
    torch.save({f"Model.{k}": v for k, v in build_model(small_tfn, MOSI_DIMS, MOSI_LENS).state_dict().items()}, sd)
    run = fx.cli("convert-official", sd, "--family", "lmf", "--dataset", tiny_mosi_unaligned, "--out", out)
    assert run.returncode == 2 and not out.exists()
    assert run.stderr.count("\n") == 1 and "keys are not part of MMSA's LMF: Model.output_range" in run.stderr, run.stderr
    cfg = apply_overrides(preset("mosei", "lmf"), {"model.rank": 6, "model.text_hidden": 32})
    dims = {"l": 768, "a": 74, "v": 35}
    state = {f"Model.{k}": v for k, v in build_model(cfg, dims, MOSI_LENS).state_dict().items()}
    conv = implementation("lmf").convert_official(state, "mosei", dims=dims, seq_lens=MOSI_LENS)
    assert (conv.config.model.rank, conv.config.model.text_hidden, conv.dims) == (6, 32, dims)
    assert all(torch.equal(v, state[f"Model.{k}"]) for k, v in conv.model.state_dict().items())


def test_configs_lmf_cannot_run_are_one_line_errors():
    with pytest.raises(DLFError, match=r"model.modalities=\['a', 'v'\]: lmf fuses all three"):
        build_config("mosi", ("--set", {"model.family": "lmf", "model.modalities": ["a", "v"]}))
    with pytest.raises(DLFError, match="model.factor_lr must be > 0"):
        build_config("mosi", ("--set", {"model.family": "lmf", "model.factor_lr": 0}))
    with pytest.raises(DLFError, match="model.rank must be >= 1"):
        build_config("mosi", ("--set", {"model.family": "lmf", "model.rank": 0}))
    with pytest.raises(DLFError, match="^--set: train.accumulation=2: lmf needs 1"):  # when the config is built
        build_config("mosi", ("--set", {"model.family": "lmf", "train.accumulation": 2}))


@pytest.mark.slow
def test_a_short_training_run_through_the_cli(tmp_path, tiny_mosi_unaligned):
    env = {**os.environ, "DLF_HOME": str(tmp_path / "home")}
    run = fx.cli("train", "--variant", "lmf", "--dataset", tiny_mosi_unaligned, "--set", "train.max_epochs=2",
                 "--threads", "1", "--device", "cpu", "--json", env=env)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["epochs"] == 2 and np.isfinite(result["test"]["mae"])


def test_the_search_space_file_samples_only_valid_lmf_configs():
    from dlf.tune.space import load_space

    space = load_space(Path(__file__).resolve().parents[1] / "spaces" / "lmf.yaml", preset("mosi", "lmf"))
    assert {"model.rank", "model.factor_lr", "train.weight_decay"} <= set(space.paths)
    for corpus in ("mosi", "mosei"):  # MMSA's own defaults are points of its grid
        assert set(space.baseline(preset(corpus, "lmf"))) == set(space.paths), corpus
