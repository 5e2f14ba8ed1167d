"""The DMD model's behaviour on small sizes: which parameters learn (the dead projections never do), what
the GD distances detach, the loss weights and switches, MOSEI's unequal lengths, dropout through the
per-micro-batch generator, the presets and config checks, and the bert text mode."""
from __future__ import annotations

import pytest
import torch

import dmd_fixture as fx
from dlf.config import apply_overrides, preset
from dlf.errors import DLFError
from dlf.models._kernels import dropout_rng
from dlf.models.dmd.losses import distillation_terms
from dlf.models.dmd.units import PAIRS
from dlf.models.registry import implementation

IMPL = implementation("dmd")


def _terms(model, cfg, batch=None):
    text, audio, vision, labels = batch or fx.small_batch()
    return IMPL.loss_terms(model(text, audio, vision), labels, cfg)


def test_every_used_parameter_learns_and_the_dead_projections_never_do(one_thread):
    model, cfg = fx.small_model()
    model.train()
    text, audio, vision, labels = fx.small_batch()
    # labels far above every prediction: no L1 gradient cancels over the batch (a sign-balanced batch
    # gives the final bias an exactly zero gradient)
    _terms(model, cfg, (text, audio, vision, labels + 5))["total"].backward()
    for name, p in model.named_parameters():
        if name.startswith("proj_cosine."):
            assert p.grad is None, name
        elif name.endswith("W_edge.bias"):  # added to all six edge logits: the softmax cancels it
            assert p.grad is not None and p.grad.abs().max() < 1e-6, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None} >= {"gd_homo", "gd_hetero"}


def test_gd_distances_detach_the_teacher_only():
    g = torch.Generator().manual_seed(1)
    logits, reprs = torch.randn(3, 5, 1, generator=g), torch.randn(3, 5, 4, generator=g)
    edges = torch.softmax(torch.randn(5, 6, generator=g), dim=1).requires_grad_()
    p = torch.full((6,), 1 / 6)
    lc = preset("mosi", "dmd").loss
    got = logits.clone().requires_grad_()
    distillation_terms(edges, got, reprs, p, lc, hetero=False)["logit"].backward()
    want = torch.zeros_like(logits)  # d/d student of sum_x mean_b(w |l_j - l_i|), teacher constant
    for x, (j, i) in enumerate(PAIRS):
        w = (edges[:, x] + p[x]).detach()
        want[j] += (w * torch.sign(logits[j, :, 0] - logits[i, :, 0]) / 5).unsqueeze(-1)
    torch.testing.assert_close(got.grad, want)
    assert edges.grad is not None and edges.grad.abs().sum() > 0  # the edge weights are not detached


def test_a_zero_weight_keeps_exactly_its_term_out_of_the_total(one_thread):
    model, cfg = fx.small_model()
    model.eval()
    batch = fx.small_batch()
    with torch.no_grad():
        full = _terms(model, cfg, batch)
        homo = sum(full[f"task_{m}_homo"] for m in "lva")
        for weight, part in (("recon", 0.1 * full["recon"]), ("cycle", 0.1 * full["cycle"]),
                             ("margin", 0.01 * full["margin"]), ("ortho", 0.01 * full["ortho"]),
                             ("gd_homo", full["homo_gd"]), ("gd_hetero", full["hetero_gd"]),
                             ("task_homo", homo), ("task_all", full["task_all"])):
            off = _terms(model, apply_overrides(cfg, {f"loss.{weight}": 0}), batch)
            assert set(off) == set(full), weight  # still computed and logged
            assert off["total"].item() == pytest.approx((full["total"] - part).item(), abs=1e-5), weight
        with_repr = _terms(model, apply_overrides(cfg, {"loss.homo_repr_in_total": True}), batch)
    assert with_repr["homo_gd"].item() == pytest.approx((full["homo_gd"] + 0.05 * full["homo_repr"]).item(), rel=1e-6)
    assert full["homo_repr"] > 0


def test_the_priors_and_regulariser_follow_the_config(one_thread):
    model, cfg = fx.small_model()
    model.eval()
    with torch.no_grad():
        out = model(*fx.small_batch()[:3])
        y = fx.small_batch()[3]
        edges = out["edges_homo"]
        torch.testing.assert_close(edges.sum(1), torch.ones(6))  # one softmax over the six edges per sample
        uniform = IMPL.loss_terms(out, y, apply_overrides(cfg, {"loss.homo_prior": ""}))
        official = IMPL.loss_terms(out, y, cfg)
    want = 10 * (edges.mean(0) - 1 / 6).pow(2).sum()
    assert uniform["homo_reg"].item() == pytest.approx(want.item(), rel=1e-5)
    assert official["homo_reg"] > uniform["homo_reg"]  # the hand-set prior puts 0.48 on l>v and l>a


def test_mosei_kernels_give_unequal_lengths_that_cross_attention_handles(one_thread):
    model, cfg = fx.small_model(**{"model.conv_kernel_a": 1, "model.conv_kernel_v": 3})
    model.eval()
    with torch.no_grad():
        out = model(*fx.small_batch()[:3])
    assert [out[f"s_{m}"].shape[1] for m in "lav"] == [5, 9, 7]
    assert out["last_h_a"].shape == (6, 20) and out["output_logit"].shape == (6, 1)
    assert out["c_a_sim"].shape == (6, 10) and out["recon_v"].shape == (6, 10, 7)


def test_dropout_draws_from_the_micro_batch_generator_only(one_thread):
    model, cfg = fx.small_model()
    model.train()
    text, audio, vision, _ = fx.small_batch()
    outs = []
    for global_seed in (0, 99):  # the global generator must not matter
        torch.manual_seed(global_seed)
        with dropout_rng(torch.Generator().manual_seed(7)), torch.no_grad():
            outs.append(model(text, audio, vision))
    for name, value in outs[0].items():
        torch.testing.assert_close(value, outs[1][name], rtol=0, atol=0, msg=name)
    with torch.no_grad():
        model.eval()
        assert not torch.equal(model(text, audio, vision)["output_logit"], outs[0]["output_logit"])


def test_presets_hold_the_official_configs_and_recipe():
    mosi, mosei = preset("mosi", "dmd"), preset("mosei", "dmd")
    assert (mosi.model.d_model, mosi.model.n_heads, mosei.model.d_model, mosei.model.n_heads) == (50, 10, 30, 6)
    assert [getattr(mosei.model, f"conv_kernel_{m}") for m in "lav"] == [5, 1, 3]
    assert (mosi.model.text_dropout, mosei.model.text_dropout, mosei.model.attn_dropout) == (0.5, 0.3, 0.4)
    assert (mosi.model.n_levels, mosi.model.gd_temperature, mosi.loss.gd_reg, mosi.loss.prior_temperature) == (4, 0.125, 10, 0.25)
    assert not mosi.loss.homo_repr_in_total and not mosi.loss.ortho_per_vector and mosi.model.dead_projections
    for t in (mosi.train, mosei.train):
        assert (t.lr, t.weight_decay, t.batch_size, t.accumulation, t.clip_value) == (1e-4, 0.0, 16, 10, 0.6)
        assert (t.scheduler, t.plateau_factor, t.plateau_patience, t.patience) == ("plateau", 0.5, 5, 10)
        assert (t.val_loss, t.val_decimals, t.min_delta, t.max_epochs) == ("mae", 4, 1e-6, 1000)
    assert mosi.data.aligned and mosei.data.aligned and mosi.model.text_encoder == "bert"


@pytest.mark.parametrize("overrides,message", [
    ({"model.modalities": ["l", "a"]}, "DMD fuses all three modalities"),
    ({"loss.homo_prior": "l>v,x>a"}, "loss.homo_prior='l>v,x>a': unknown edge 'x>a'"),
    ({"model.n_heads": 3}, "must be divisible by model.n_heads"),
    ({"loss.task_all": 0, "loss.task_c": 0, "loss.task_homo": 0, "loss.task_hetero": 0}, "no prediction is trained"),
])
def test_bad_settings_are_refused_in_one_line(overrides, message):
    with pytest.raises(DLFError, match=message.replace("(", r"\(").replace(")", r"\)")):
        apply_overrides(preset("mosi", "dmd"), overrides, source="--set")


def test_the_search_space_holds_both_presets():
    from dlf.tune.space import default_space

    space = default_space(preset("mosi", "dmd"), "mosi")
    assert space.source.endswith("dmd.yaml") and all(p.startswith("loss.") for p in space.paths)
    for corpus in ("mosi", "mosei"):
        assert set(space.baseline(preset(corpus, "dmd"))) == set(space.paths), corpus


@pytest.mark.slow  # loads transformers
def test_bert_mode_fine_tunes_bert_on_one_lane_and_reloads_without_its_folder(tmp_path):
    import shutil

    from small_bert import save_bert

    from dlf.train.checkpoint import load_checkpoint, save_checkpoint
    from dlf.train.loop import Runtime, _lane_pool

    folder = save_bert(tmp_path / "bert", 24)
    model, cfg = fx.small_model(**{"model.text_encoder": "bert", "model.pretrained": str(folder)})
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(103, 512, (6, 9), generator=g)
    text = torch.stack([ids, torch.ones_like(ids), torch.zeros_like(ids)], dim=1)  # (B, 3, T)
    _, audio, vision, labels = fx.small_batch()
    model.train()
    IMPL.loss_terms(model(text, audio, vision), labels, cfg)["total"].backward()
    for name, p in model.text_encoder.named_parameters():  # BERT learns, its pooler (unread) does not
        assert (p.grad is None) == (".pooler." in f".{name}"), name
    assert _lane_pool(model, cfg, torch.device("cpu"), Runtime(lanes=4)).lanes == 1  # BERT's dropout is torch's
    save_checkpoint(tmp_path / "m.pt", model, cfg, fx.SMALL_DIMS, fx.SMALL_LENS, {"name": "x"})
    shutil.rmtree(folder)
    loaded, _, meta = load_checkpoint(tmp_path / "m.pt")
    assert meta["bert_config"]["hidden_size"] == 24
    with torch.no_grad():
        torch.testing.assert_close(loaded(text, audio, vision)["output_logit"],
                                   model.eval()(text, audio, vision)["output_logit"])


def test_the_features_hook_gives_the_fused_vector_the_final_head_reads():
    from dlf.models.registry import features

    model, _ = fx.small_model()
    model.eval()
    text, audio, vision, _ = fx.small_batch()
    out = model(text, audio, vision, with_losses=False)
    feats = features(model, out)
    d = out["c_fusion"].shape[1] // 3  # model.d_model
    assert list(feats)[0] == "fused" and feats["fused"].shape == (text.shape[0], 9 * d)
    assert feats["shared"].shape == (text.shape[0], 3 * d) and feats["specific_l"].shape == (text.shape[0], 2 * d)
    head = model.final_head
    assert torch.equal(head.out(head(feats["fused"])), out["output_logit"])
