"""The mfn family (MMSA 2.2.1 MFN): parity with MMSA's own forward through the CLI, loss terms,
parameter counts, gradients, a short training run, MMSA's preprocessing and bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import baseline_fixture as bf
from dlf.config import DataConfig, build_config, preset
from dlf.data.mmsa import load_dataset
from dlf.errors import DLFError
from dlf.models.mfn.memory import avg_pool_align
from dlf.models.mmsa_common import time_mean
from dlf.models.registry import build_model, implementation
from dlf.tune.space import load_space

DIMS, LENS = {"l": 768, "a": 5, "v": 20}, {"l": 50, "a": 50, "v": 50}
SPACE = Path(__file__).resolve().parents[1] / "spaces" / "mfn.yaml"


def first_train_batch(model: str, n: int = 8):
    split = load_dataset(str(bf.data_path(model)), DataConfig(aligned=True)).splits["train"]
    as_t = lambda x: torch.as_tensor(np.asarray(x[:n]), dtype=torch.float32)  # noqa: E731
    return as_t(split.text), as_t(split.audio), as_t(split.vision), as_t(split.labels).reshape(-1)


@bf.needs("MFN")
@pytest.mark.slow
def test_outputs_match_mmsa_through_convert_and_evaluate(tmp_path):
    got = bf.convert_and_evaluate(tmp_path, "mfn", bf.state_dict("MFN"), bf.data_path("MFN"))
    for split, outs in bf.outputs("MFN").items():
        assert set(outs) == {"M", "L"} and set(got[split]) == {"M", "L", "id", "label"}
        for name, want in outs.items():
            assert got[split][name].shape == want.shape
            np.testing.assert_allclose(got[split][name], want, rtol=0, atol=1e-5, err_msg=f"{split} {name}")


@bf.needs("MFN")
def test_loss_terms_match_mmsa_on_the_first_eight_train_samples():
    family = implementation("mfn")
    model = family.convert_official(bf.state_dict("MFN"), "mosi").model
    text, audio, vision, labels = first_train_batch("MFN")
    with torch.no_grad():
        terms = family.loss_terms(model(text, audio, vision), labels, preset("mosi", "mfn"))
    want = bf.loss_terms("MFN")
    assert set(terms) == set(want)
    for name, value in want.items():
        assert float(terms[name]) == pytest.approx(value, abs=1e-5)


@bf.needs("MFN")
def test_the_same_seed_builds_mmsas_initial_weights():
    """Modules are built in MMSA's order, so torch.manual_seed(1111) gives the fixture's weights (which
    are MMSA's construction-time values rounded to float16)."""
    torch.manual_seed(1111)
    model = build_model(preset("mosi", "mfn"), DIMS, LENS)
    want = bf.state_dict("MFN")
    assert [k for k, v in model.state_dict().items() if not torch.equal(v.half().float(), want["Model." + k])] == []


@pytest.mark.parametrize("dataset,total", [("synthetic-mosi", 2_172_657), ("synthetic-mosei", 1_276_865)])
@pytest.mark.slow
def test_parameter_counts_are_mmsas(dataset, total):
    out = bf.cli("model", "summary", "--variant", "mfn", "--dataset", dataset, "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["total"] == total == sum(info["components"].values()) and info["text_encoder"] == 0
    assert list(info["components"])[:3] == ["lstm_l", "lstm_a", "lstm_v"]  # MMSA's module names


def test_gradients_reach_every_parameter():
    cfg = preset("mosi", "mfn")
    family = implementation("mfn")
    model = build_model(cfg, DIMS, LENS).eval()  # eval: no dropout mask can hide a parameter
    g = torch.Generator().manual_seed(0)
    x = [torch.randn(3, 6, DIMS[m], generator=g) for m in ("l", "a", "v")]
    family.loss_terms(model(*x), torch.tensor([0.5, -1.0, 2.0]), cfg)["total"].backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == [] and all(p.requires_grad for p in model.parameters())


@pytest.mark.slow
def test_a_short_training_run_through_the_cli(tiny_mosi, tmp_path):
    out = bf.cli("train", "--variant", "mfn", "--dataset", tiny_mosi, "--set", "train.max_epochs=2", "--threads", "1",
                 "--save", tmp_path / "mfn.pt", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["epochs"] == 2 and np.isfinite(result["test"]["mae"])
    ev = bf.cli("evaluate", "--checkpoint", tmp_path / "mfn.pt", "--dataset", tiny_mosi, "--split", "test", "--json")
    assert ev.returncode == 0, ev.stderr


def test_the_recipe_is_mmsas():
    mosi, mosei = preset("mosi", "mfn"), preset("mosei", "mfn")
    assert (mosi.train.batch_size, mosi.train.lr, mosi.train.weight_decay) == (128, 2e-3, 0.0)
    assert (mosei.train.batch_size, mosei.train.lr, mosei.train.weight_decay) == (64, 5e-4, 1e-4)
    for cfg in (mosi, mosei):
        t = cfg.train
        assert (t.accumulation, t.clip_value, t.scheduler, t.val_loss, t.val_decimals, t.patience) == \
            (1, 0.0, "none", "mae", 4, 8)
        assert cfg.data.aligned and cfg.model.av_time_mean and cfg.model.time_mean_over_padding


def test_avg_pool_alignment_is_mmsas_strided_mean():
    x = torch.arange(2 * 100 * 3, dtype=torch.float32).reshape(2, 100, 3)
    torch.testing.assert_close(avg_pool_align(x, 50), (x[:, :50] + x[:, 50:]) / 2)  # frames j and j + 50
    y = x[:, :75]  # padded with 25 copies of its last frame to 100
    padded = torch.cat([y, y[:, -1:].expand(2, 25, 3)], dim=1)
    torch.testing.assert_close(avg_pool_align(y, 50), (padded[:, :50] + padded[:, 50:]) / 2)
    torch.testing.assert_close(avg_pool_align(x[:, :1], 50), x[:, :1].expand(2, 50, 3))  # repeated
    assert torch.equal(avg_pool_align(x[:, :50], 50), x[:, :50])  # already aligned: as is


def test_time_mean_over_padding_and_over_own_frames():
    x = torch.zeros(2, 10, 3)
    x[0, :4], x[1, :10] = 2.0, 1.0  # sample 0: 4 frames then zero padding
    torch.testing.assert_close(time_mean(x), torch.tensor([[0.8] * 3, [1.0] * 3]))  # MMSA: padding counts
    torch.testing.assert_close(time_mean(x, over_padding=False), torch.tensor([[2.0] * 3, [1.0] * 3]))
    x[1, 3, 0] = float("nan")
    assert time_mean(x)[1, 0] == 0  # NaN -> 0, as MMSA sets it


@pytest.mark.slow
def test_audio_and_vision_enter_as_time_means_or_as_aligned_streams(tiny_mosi_unaligned):
    split = load_dataset(str(tiny_mosi_unaligned), DataConfig(aligned=False)).splits["test"]
    text, audio, vision = (torch.as_tensor(np.asarray(x[:2]), dtype=torch.float32)
                           for x in (split.text, split.audio, split.vision))
    model = build_model(preset("mosi", "mfn"), DIMS, {"l": 50, "a": 375, "v": 500}).eval()
    with torch.no_grad():
        out = model(text, audio, vision)["M"]
        repeated = model(text, time_mean(audio)[:, None].expand(-1, 7, -1), time_mean(vision)[:, None].expand(-1, 3, -1))
        torch.testing.assert_close(out, repeated["M"])  # only the mean over the padded axis is read
        model.av_time_mean = False  # model.av_time_mean=false: the streams avg-pooled to the 50 text steps
        aligned = model(text, audio, vision)["M"]
        torch.testing.assert_close(aligned, model(text, avg_pool_align(audio, 50), avg_pool_align(vision, 50))["M"])
    assert not torch.allclose(out, aligned)


@pytest.mark.parametrize("corpus", ["mosi", "mosei"])
def test_the_search_space_is_mmsas_grid_and_valid_on_both_presets(corpus):
    choices = {p.path: p.choices for p in load_space(SPACE, preset(corpus, "mfn")).params}
    assert choices["model.mem_size"] == (64, 128, 256, 300, 400) and choices["train.batch_size"] == (32, 64, 128)
    assert all(c == (0.0, 0.2, 0.5, 0.7) for p, c in choices.items() if p.endswith("_dropout"))


def test_a_modality_subset_is_refused_in_one_line():
    with pytest.raises(DLFError, match=r"model.modalities=\['l', 'a'\]: mfn fuses all three"):
        build_config("mosi", ("--set", {"model.family": "mfn", "model.modalities": ["l", "a"]}))
    with pytest.raises(DLFError, match="model.gamma1_dropout must be in"):
        build_config("mosi", ("--set", {"model.family": "mfn", "model.gamma1_dropout": 1.0}))


@bf.needs("Graph_MFN")
@pytest.mark.slow
def test_a_state_dict_of_another_family_is_one_line_and_writes_nothing(tmp_path):
    sd, out = tmp_path / "graph_mfn.pt", tmp_path / "out.pt"
    torch.save(bf.state_dict("Graph_MFN"), sd)
    r = bf.cli("convert-official", sd, "--family", "mfn", "--dataset", bf.data_path("MFN"), "--out", out)
    assert r.returncode == 2 and not out.exists()
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "not part of MMSA's MFN" in lines[0]
    assert "Model.graph_mfn.efficacy_model.0.bias" in lines[0]


@bf.needs("MFN")
@pytest.mark.slow
def test_weights_of_other_widths_than_the_dataset_are_one_line(tmp_path, tiny_mosei):
    sd, out = tmp_path / "mfn.pt", tmp_path / "out.pt"
    torch.save(bf.state_dict("MFN"), sd)
    r = bf.cli("convert-official", sd, "--family", "mfn", "--dataset", tiny_mosei, "--out", out)
    assert r.returncode == 2 and not out.exists()
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "audio width 5" in lines[0] and "74" in lines[0]
