"""dlf.models.dlf.model: parameter counts, every switch combination, gradients, unaligned inputs, determinism."""
import itertools

import pytest
import torch

from dlf.config import RunConfig, apply_overrides, preset
from dlf.errors import DLFError
from dlf.models.dlf.losses import loss_terms
from dlf.models.dlf.model import DLF, build_model, parameter_summary

torch.set_num_threads(1)

DIMS = {"l": 12, "a": 5, "v": 7}
LENS = {"l": 9, "a": 9, "v": 9}
SUBSETS = ["l", "a", "v", "la", "lv", "av", "lav"]


def make(overrides=None, dims=DIMS, lens=LENS, corpus="mosi"):
    cfg = apply_overrides(preset(corpus), overrides or {})
    torch.manual_seed(0)
    return build_model(cfg, dims, lens), cfg


def batch(b=4, dims=DIMS, lens=LENS, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = {m: torch.randn(b, lens[m], dims[m], generator=g) for m in "lav"}
    for m in x:
        x[m][0, -3:] = 0  # zero padding, as in the MMSA files
    y = torch.tensor([0.4, -1.2, 0.4, 2.0, -1.2, 0.0, 3.0, -0.6])[:b]  # repeats: official L_m positives
    return (x["l"], x["a"], x["v"]), y


@pytest.mark.parametrize("corpus,dims,expected", [
    ("mosi", {"l": 768, "a": 5, "v": 20}, 1_628_605),
    ("mosei", {"l": 768, "a": 74, "v": 35}, 1_576_905),
])
def test_parameter_count_matches_the_official_used_modules(corpus, dims, expected):
    model, _ = make(dims=dims, lens={"l": 50, "a": 50, "v": 50}, corpus=corpus)
    summary = parameter_summary(model)
    assert summary["total"] == expected and summary["text_encoder"] == 0
    assert sum(summary["components"].values()) == expected
    assert summary["components"]["triplet_proj"] == 3 * (50 * (51 - model.cfg.conv_kernel) * 50 + 50)
    assert summary["components"]["lfa"] == 2 * 61_400 + 61_400 + 2 * 92_050  # 2 cross + L mem + A, V mem


def _switch_grid():
    """Every (fdm, lfa, hp, modalities) combination; the fast lane takes every switch setting with
    all three modalities and every modality subset with all switches on, the rest is slow."""
    for fdm, lfa, hp, mods in itertools.product([True, False], [True, False], [True, False], SUBSETS):
        fast = mods == "lav" or (fdm and lfa and hp)
        yield pytest.param(fdm, lfa, hp, mods, marks=() if fast else pytest.mark.slow)


@pytest.mark.parametrize("fdm,lfa,hp,mods", _switch_grid())
@pytest.mark.slow
def test_every_switch_combination_builds_and_runs(fdm, lfa, hp, mods):
    model, cfg = make({"model.fdm": fdm, "model.lfa": lfa, "model.hp": hp, "model.modalities": mods})
    inputs, y = batch()
    out = model(*inputs)
    assert out.pred.shape == (4,)
    assert (out.pred_shared is not None) == hp and set(out.pred_specific) == (set(mods) if hp else set())
    assert set(out.proj) == set(mods) and all(v.shape == (4, 5, 50) for v in out.proj.values())
    assert set(out.specific) == (set(mods) if fdm else set())
    assert set(out.shared_sim) == (set(mods) if fdm else set())
    assert all(v.shape == (4, 50) for v in out.shared_sim.values())
    assert (hasattr(model, "lfa"), hasattr(model, "crossmodal")) == (lfa, not lfa)
    assert hasattr(model, "specific_encoders") == fdm and hasattr(model, "decoders") == fdm
    n = len(mods)
    widths = {m: 50 for m in mods} if lfa else {m: 50 * max(1, n - 1) for m in mods}
    assert model.final_head.proj1.in_features == sum(widths.values()) + 50 * n
    assert model.fusion["c"].in_features == 50 * n
    terms = loss_terms(out, y, cfg)
    assert torch.isfinite(terms["total"])


def _check_all_grads(model, cfg, lens=LENS):
    inputs, y = batch(lens=lens)
    model.train()
    loss_terms(model(*inputs), y, cfg)["total"].backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in params if p.grad is None]
    assert not missing, f"no gradient: {missing[:5]}"
    # an L1 head's bias gradient (a sum of signs) may cancel exactly; weights must move
    zero = [n for n, p in params if p.dim() > 1 and not p.grad.abs().sum() > 0]
    assert not zero, f"zero gradient: {zero[:5]}"


SLOW = pytest.mark.slow  # the fast lane keeps the full model, each switch off, and all losses off


@pytest.mark.parametrize("overrides", [
    {}, {"model.fdm": False}, {"model.lfa": False}, {"model.hp": False},
    *(pytest.param({"model.modalities": m}, marks=SLOW) for m in SUBSETS[:-1]),
    pytest.param({"model.lfa": False, "model.modalities": "av"}, marks=SLOW),
    *(pytest.param({f"loss.lambda_{x}": 0}, marks=SLOW) for x in "msro"),
    {"loss.lambda_r": 0, "loss.lambda_s": 0, "loss.lambda_m": 0, "loss.lambda_o": 0},
    *(pytest.param(o, marks=SLOW) for o in ({"loss.beta_sh": 0, "loss.beta_v": 0}, {"model.triplet": "paper"},
                                             {"model.attn_mask": False})),
])
def test_gradients_reach_every_parameter(overrides):
    model, cfg = make(overrides)
    _check_all_grads(model, cfg)


@pytest.mark.slow
def test_parts_feeding_only_zero_weight_losses_are_not_built():
    model, _ = make({"loss.lambda_m": 0, "loss.lambda_s": 0, "loss.beta_sh": 0, "loss.beta_a": 0})
    assert not hasattr(model, "triplet_proj") and not hasattr(model, "shared_head")
    assert hasattr(model, "decoders")  # still needed by L_r
    assert model.specific_heads["a"].out is None and model.specific_heads["l"].out is not None
    out = model(*batch()[0])
    assert out.specific_re == {} and out.shared_sim == {} and set(out.pred_specific) == {"l", "v"}
    model, _ = make({"loss.lambda_r": 0, "loss.lambda_s": 0})
    assert not hasattr(model, "decoders") and model(*batch()[0]).recon == {}
    full = DLF(preset("mosi").model, DIMS, LENS)  # no LossConfig: everything the switches allow is built
    assert hasattr(full, "triplet_proj") and hasattr(full, "shared_head")


@pytest.mark.slow
def test_hp_off_keeps_fusion_features_but_drops_prediction_heads():
    model, _ = make({"model.hp": False})
    assert not hasattr(model, "shared_head")
    assert all(h.out is None for h in model.specific_heads.values())
    assert all(h.proj1 is not None for h in model.specific_heads.values())
    full, _ = make()
    # exactly the shared head (150x150 twice + 150x1) and three Linear(50, 1) output layers are gone
    assert parameter_summary(full)["total"] - parameter_summary(model)["total"] == 45_451 + 3 * 51


@pytest.mark.slow
def test_unaligned_inputs_have_their_own_lengths():
    lens = {"l": 9, "a": 15, "v": 12}
    model, cfg = make(lens=lens)
    inputs, y = batch(lens=lens)
    out = model(*inputs)
    assert {m: v.shape[1] for m, v in out.proj.items()} == {"l": 5, "a": 11, "v": 8}
    assert model.triplet_proj["a"].in_features == 50 * 11
    _check_all_grads(model, cfg, lens)
    mult, cfg2 = make({"model.lfa": False}, lens=lens)
    assert mult(*inputs).pred.shape == (4,)


@pytest.mark.slow
def test_same_seed_gives_identical_training_outputs():
    def run():
        model, cfg = make()
        model.train()
        torch.manual_seed(7)
        return loss_terms(model(*batch()[0]), batch()[1], cfg)

    a, b = run(), run()
    assert all(torch.equal(a[k], b[k]) for k in a)
    model, _ = make()
    model.eval()
    inputs = batch()[0]
    assert torch.equal(model(*inputs).pred, model(*inputs).pred)


@pytest.mark.slow
def test_dropout_acts_in_training_only():
    model, _ = make()
    inputs = batch()[0]
    model.train()
    torch.manual_seed(1)
    p1 = model(*inputs).pred
    p2 = model(*inputs).pred
    assert not torch.equal(p1, p2)
    model.eval()
    with torch.inference_mode():
        assert torch.equal(model(*inputs).pred, model(*inputs).pred)


def test_wrong_input_shape_is_a_clear_error():
    model, _ = make()
    (t, a, v), _ = batch()
    with pytest.raises(DLFError, match=r"audio input has shape \(4, 9, 6\).*\(batch, 9, 5\)"):
        model(t, torch.randn(4, 9, 6), v)
    with pytest.raises(DLFError, match="conv_kernel"):
        build_model(RunConfig(), DIMS, {"l": 3, "a": 9, "v": 9})


@pytest.mark.slow
def test_overfits_a_tiny_batch():
    model, cfg = make({"model.text_dropout": 0, "model.embed_dropout": 0, "model.attn_dropout": 0,
                       "model.attn_dropout_a": 0, "model.output_dropout": 0})
    inputs, y = batch(b=8)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    model.train()
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss = loss_terms(model(*inputs), y, cfg)
        loss["total"].backward()
        opt.step()
        first = first if first is not None else loss["task_f"].item()
    assert loss["task_f"].item() < 0.2 * first


@pytest.mark.slow
def test_inference_without_loss_parts_gives_the_same_predictions():
    model, _ = make()
    model.eval()
    inputs = batch()[0]
    with torch.inference_mode():
        full, lean = model(*inputs), model(*inputs, with_losses=False)
    assert torch.equal(full.pred, lean.pred) and torch.equal(full.pred_shared, lean.pred_shared)
    assert lean.recon == {} and lean.specific_re == {} and lean.shared_sim == {} and set(lean.specific) == set("lav")


@pytest.mark.slow
def test_training_after_a_first_forward_in_inference_mode():
    """Cached position tables and masks built under inference_mode must still work with autograd."""
    from dlf.models.layers import mult_mask, sinusoidal_table

    sinusoidal_table.cache_clear()
    mult_mask.cache_clear()
    model, cfg = make(lens={"l": 11, "a": 11, "v": 11})
    inputs, y = batch(lens={"l": 11, "a": 11, "v": 11})
    model.eval()
    with torch.inference_mode():
        model(*inputs)
    model.train()
    loss_terms(model(*inputs), y, cfg)["total"].backward()
    assert model.input_proj["l"].weight.grad is not None
