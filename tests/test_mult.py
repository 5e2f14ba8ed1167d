"""MulT (MMSA 2.2.1 MULT) as a model family: parity with MMSA's own forward through the CLI, its loss,
parameter counts, gradients, the lane RNG its accumulation needs, a short training run, bad input."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import baseline_fixture as bf
from dlf.config import apply_overrides, preset
from dlf.errors import DLFError
from dlf.models._kernels import dropout_rng
from dlf.models.mult.family import FAMILY
from dlf.models.mult.model import build_model
from dlf.models.mult.official import convert_official_state
from dlf.tune.space import load_space

REPO = Path(__file__).resolve().parents[1]
MOSI = {"l": 768, "a": 5, "v": 20}
LENS = {"l": 50, "a": 375, "v": 500}


def _inputs(split: dict, n: int | None = None) -> list[torch.Tensor]:
    """MMSA's loader: text features, audio with -inf set to 0, vision; no lengths."""
    audio = np.asarray(split["audio"], dtype=np.float32).copy()
    audio[np.isinf(audio)] = 0
    return [torch.tensor(np.asarray(x, dtype=np.float32)[:n]) for x in (split["text"], audio, split["vision"])]


def _small(**overrides):
    """A narrow MulT on short random inputs, for the gradient and RNG checks."""
    cfg = apply_overrides(preset("mosi", "mult"), {"model.d_model": 10, "model.n_heads": 2, "model.n_levels": 1,
                                                   **overrides})
    torch.manual_seed(0)
    model = build_model(cfg, MOSI, {"l": 12, "a": 15, "v": 18})
    x = [torch.randn(3, 12, 768), torch.randn(3, 15, 5), torch.randn(3, 18, 20)]
    return cfg, model, x


@bf.needs("MULT")
@pytest.mark.slow  # four CLI processes
def test_cli_import_reproduces_every_mmsa_output(tmp_path):
    got = bf.convert_and_evaluate(tmp_path, "mult", bf.state_dict("MULT"), bf.data_path("MULT"))
    ref = bf.outputs("MULT")
    for split, outs in ref.items():
        assert set(outs) <= set(got[split])
        for name, want in outs.items():
            assert got[split][name].shape == want.shape, (split, name)
            np.testing.assert_allclose(got[split][name], want, rtol=0, atol=1e-5, err_msg=f"{split} {name}")


@bf.needs("MULT")
@pytest.mark.slow
def test_loss_terms_match_mmsa_on_the_first_train_samples():
    conv = convert_official_state(bf.state_dict("MULT"), "mosi", dims=MOSI, seq_lens=LENS)
    with open(bf.data_path("MULT"), "rb") as fh:
        train = pickle.load(fh)["train"]
    labels = torch.tensor(np.asarray(train["regression_labels"], dtype=np.float32)[:8])
    with torch.no_grad():
        terms = FAMILY.loss_terms(conv.model(*_inputs(train, 8)), labels, conv.config)
    for name, want in bf.loss_terms("MULT").items():
        assert float(terms[name]) == pytest.approx(want, abs=1e-5), name
    assert conv.dropped == ["fairseq version buffers"] and not conv.model.training


@pytest.mark.parametrize("dataset,total", [("synthetic-mosi", 2_571_551), ("synthetic-mosei", 982_951)])
@pytest.mark.slow
def test_parameter_counts_are_mmsa_totals(dataset, total):
    out = bf.cli("model", "summary", "--variant", "mult", "--dataset", dataset, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    summary = json.loads(out.stdout)
    assert summary["total"] == total and summary["text_encoder"] == 0
    assert sum(summary["components"].values()) == total
    if dataset == "synthetic-mosi" and (bf.ROOT / "MULT").is_dir():  # MMSA's per-module counts
        per_module = bf.meta("MULT")["params_per_module"]
        assert summary["components"] == {k.removeprefix("Model."): v for k, v in per_module.items()}


def test_presets_carry_mmsa_recipe():
    mosi, mosei = preset("mosi", "mult"), preset("mosei", "mult")
    for cfg, batch, lr, patience in ((mosi, 16, 2e-3, 5), (mosei, 4, 5e-4, 20)):
        t = cfg.train
        assert (t.batch_size, t.lr, t.plateau_patience) == (batch, lr, patience)
        assert (t.weight_decay, t.accumulation, t.clip_value, t.scheduler, t.plateau_factor) == (0.0, 8, 0.6, "plateau", 0.1)
        assert (t.val_loss, t.val_decimals, t.patience, t.min_delta, cfg.data.aligned) == ("mae", 4, 8, 1e-6, False)
    m = mosei.model
    assert (m.d_model, m.n_heads, m.conv_kernel_l, m.conv_kernel_a, m.conv_kernel_v) == (30, 6, 5, 1, 3)
    assert (m.text_dropout, m.attn_dropout, m.attn_dropout_a, m.embed_dropout) == (0.3, 0.4, 0.0, 0.0)


def test_every_parameter_gets_a_gradient():
    cfg, model, x = _small()
    model.train()
    out = model(*x)
    FAMILY.loss_terms(out, torch.randn(3), cfg)["total"].backward()
    assert out["M"].shape == (3, 1) and out["Feature_f"].shape == (3, 60)
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert silent == []
    assert FAMILY.param_groups is None  # MMSA: one Adam group of every parameter at train.lr


def test_an_input_already_d_wide_skips_its_conv_unless_switched_off():
    for skip in (True, False):
        cfg, model, x = _small(**{"model.d_model": 20, "model.n_heads": 2, "model.skip_equal_width_conv": skip})
        proj = model.project(dict(zip("lav", x)))
        assert proj["v"].shape[1] == (18 if skip else 14)  # vision is 20 wide: no Conv1d, no length loss
        model(*x)["M"].sum().backward()
        assert (model.proj_v.weight.grad is None) == skip and model.proj_a.weight.grad is not None


def test_training_dropout_draws_only_from_the_lane_generator():
    """The trainer computes accumulated micro-batches concurrently, each on its own generator: the same
    generator seed must give the same training forward, whatever the global RNG does."""
    _, model, x = _small()
    model.train()

    def run(seed):
        torch.manual_seed(1234 + seed)  # moves the global generator: must not matter
        with dropout_rng(torch.Generator().manual_seed(seed)):
            return model(*x)["M"]

    assert torch.equal(run(0), run(0)) and not torch.equal(run(0), run(1))


def test_the_mult_mask_offsets_crossmodal_keys_by_the_length_difference():
    """a<-v: 11 audio queries over 14 vision keys; query i sees keys j <= i + 3, so the last key reaches the
    last query only and key 3 reaches every query. Without the mask every query sees every key."""
    for masked in (True, False):
        _, model, x = _small(**{"model.attn_mask": masked})
        model.eval()
        proj = model.project(dict(zip("lav", x)))
        a, v = proj["a"], proj["v"]
        assert (a.shape[1], v.shape[1]) == (11, 14)
        with torch.no_grad():
            base = model.trans_a_with_v(a, v)
            changed = {}
            for j in (13, 3):
                bumped = v.clone()
                bumped[:, j] += torch.linspace(-2, 2, v.shape[2])  # not a constant: LayerNorm would cancel it
                diff = (model.trans_a_with_v(a, bumped) - base).abs().amax(dim=(0, 2))  # per query step
                changed[j] = (diff > 0).nonzero().flatten().tolist()
        assert changed == ({13: [10], 3: list(range(11))} if masked else {13: list(range(11)), 3: list(range(11))})


def test_positions_are_off_by_default_and_switchable():
    outs = {}
    for positions in (False, True):
        _, model, x = _small(**{"model.positions": positions})
        model.eval()
        enc = model.trans_l_with_a
        assert enc.positions == positions
        if not positions:  # the embedding is the sqrt(d) scale alone
            assert torch.equal(enc.embed(x[1][:, :, :1].expand(-1, -1, 10)), x[1][:, :, :1].expand(-1, -1, 10) * 10 ** 0.5)
        with torch.no_grad():
            outs[positions] = model(*x)["M"]
    assert not torch.allclose(outs[False], outs[True])


def test_check_refuses_a_modality_subset_and_bad_heads():
    with pytest.raises(DLFError, match=r"model.modalities=\['l', 'a'\]: mult fuses all three modalities"):
        apply_overrides(preset("mosi", "mult"), {"model.modalities": ["l", "a"]})
    with pytest.raises(DLFError, match=r"model.d_model \(50\) must be a positive multiple of model.n_heads \(6\)"):
        apply_overrides(preset("mosi", "mult"), {"model.n_heads": 6})
    with pytest.raises(DLFError, match="lower model.conv_kernel_l"):
        build_model(preset("mosi", "mult"), MOSI, {"l": 4, "a": 375, "v": 500})


@pytest.mark.slow
def test_another_family_state_dict_is_refused_in_one_line_and_nothing_is_written(tmp_path, tiny_mosi_unaligned):
    # official DLF names: proj_l and trans_l_with_a are MulT's too, but encoder_c and proj1_c are not
    state = {"proj_l.weight": torch.zeros(50, 768, 5), "trans_l_with_a.layer_norm.weight": torch.zeros(50),
             "encoder_c.layers.0.fc1.weight": torch.zeros(200, 50), "proj1_c.weight": torch.zeros(150, 150)}
    sd, out = tmp_path / "dlf.pt", tmp_path / "out.pt"
    torch.save(state, sd)
    run = bf.cli("convert-official", sd, "--family", "mult", "--dataset", tiny_mosi_unaligned, "--out", out)
    assert run.returncode == 2 and not out.exists()
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "2 keys are not part of MMSA's MULT: encoder_c.layers.0.fc1.weight, proj1_c.weight" in lines[0]


def test_a_truncated_or_mismatched_mult_state_dict_is_refused():
    _, model, _ = _small()
    state = {f"Model.{k}": v for k, v in model.state_dict().items()}
    cut = {k: v for k, v in state.items() if "trans_v_mem.layers.0.fc2" not in k}
    with pytest.raises(DLFError, match=r"2 tensors of the MULT model are missing: Model.trans_v_mem.layers.0.fc2"):
        convert_official_state(cut, "mosi", source="cut.pt", dims=MOSI, seq_lens={"l": 12, "a": 15, "v": 18})
    with pytest.raises(DLFError, match=r"weights expect audio width 5 .*but the dataset has 74"):
        convert_official_state(state, "mosi", source="x.pt", dims={"l": 768, "a": 74, "v": 20}, seq_lens=LENS)
    conv = convert_official_state(state, "mosi", dims=MOSI, seq_lens={"l": 12, "a": 15, "v": 18})
    assert (conv.config.model.d_model, conv.config.model.n_levels) == (10, 1)  # read from the weights
    assert conv.config.model.n_heads == 10  # the preset's: 10 divides 10


@pytest.mark.slow
def test_a_short_training_run_with_accumulation_completes(tiny_mosi_unaligned, tmp_path):
    run = bf.cli("train", "--variant", "mult", "--dataset", tiny_mosi_unaligned, "--set", "train.max_epochs=2",
                 "--set", "train.batch_size=4", "--set", "model.d_model=10", "--set", "model.n_heads=2",
                 "--json", env={**os.environ, "DLF_HOME": str(tmp_path / "home")})
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout)
    assert result["epochs"] == 2 and np.isfinite(result["test"]["mae"])


@pytest.mark.parametrize("name,corpus", [("mult.yaml", "mosi"), ("mult_mosei.yaml", "mosei")])
def test_search_spaces_load_and_every_width_head_pair_divides(name, corpus):
    base = preset(corpus, "mult")
    space = load_space(REPO / "spaces" / name, base)
    by_path = {p.path: p for p in space.params}
    widths = by_path["model.d_model"].choices
    heads = by_path["model.n_heads"].choices if "model.n_heads" in by_path else (base.model.n_heads,)
    for d in widths:
        for h in heads:
            apply_overrides(base, {"model.d_model": d, "model.n_heads": h})  # raises if h does not divide d
    assert space.baseline(base)["model.d_model"] == base.model.d_model
