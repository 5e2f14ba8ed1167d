"""The misa family's behaviour in the features mode (no BERT: fast): the text-length quirk of the audio
and vision LSTMs, the masked-mean utterance, MMSA's loss formulas and their weights, gradients, lanes and
the config checks."""
from __future__ import annotations

import pytest
import torch

from dlf.config import apply_overrides, build_config
from dlf.errors import DLFError
from dlf.models.registry import implementation
from misa_helpers import SMALL, batch, features_model

IMPL = implementation("misa")


def test_audio_and_vision_are_read_for_the_text_length_only():
    model, _ = features_model()
    text, audio, vision, _ = batch()
    length = text.ne(0).any(-1).sum(1)  # L_t per sample
    late_a, late_v = audio.clone(), vision.clone()
    for i, n in enumerate(length):
        late_a[i, n:], late_v[i, n:] = 7.0, -7.0  # every frame from L_t on
    model.eval()
    with torch.no_grad():
        ref, late = model(text, audio, vision), model(text, late_a, late_v)
        assert torch.equal(ref["M"], late["M"]) and torch.equal(ref["utt_a_orig"], late["utt_a_orig"])
        own, _ = features_model(**{"model.av_length_from_text": False})
        own.load_state_dict(model.state_dict())
        own.eval()
        changed = own(text, late_a, late_v)["utt_v_orig"]
        assert not torch.allclose(changed, own(text, audio, vision)["utt_v_orig"])
        short_v = vision.clone()
        short_v[:, 30:] = 0  # a stream that ends early: its own length is 30 frames
        torch.testing.assert_close(own.lengths(short_v, length), torch.full((5,), 30))
        torch.testing.assert_close(model.lengths(short_v, length), length)


def test_the_text_utterance_is_the_masked_mean_and_a_mask_may_be_given():
    model, _ = features_model()
    text = batch()[0]
    mask = text.ne(0).any(-1)
    mean = text.sum(1) / mask.sum(1, keepdim=True)
    utt, count = model.text_utterance(text, None)
    torch.testing.assert_close(utt, mean)
    assert torch.equal(count, mask.sum(1).float())
    given = mask.clone()
    given[:, 0] = False  # a caller's own mask (e.g. text_bert's row 1) replaces the non-zero rows
    utt2, count2 = model.text_utterance(text, given.long())
    torch.testing.assert_close(utt2, (text * given[..., None]).sum(1) / given.sum(1, keepdim=True))
    assert torch.equal(count2, count - 1)
    empty, _ = model.text_utterance(torch.zeros(2, 50, 768), None)
    assert torch.equal(empty, torch.zeros(2, 768))  # no token at all: 0, not MMSA's 0 / 0


def test_loss_terms_follow_mmsa_formulas_and_a_zero_weight_leaves_a_term_out():
    from dlf.models.misa.losses import cmd, diff_loss

    model, cfg = features_model()
    text, audio, vision, labels = batch()
    model.eval()
    with torch.no_grad():
        out = model(text, audio, vision)
        terms = IMPL.loss_terms(out, labels, cfg)
    weights = {"task_mse": 1.0, "diff": 0.1, "similarity_cmd": 0.3, "recon": 1.0}  # MOSI's
    expected = sum(w * terms[name] for name, w in weights.items())
    torch.testing.assert_close(terms["total"], expected)
    torch.testing.assert_close(terms["task_mse"], ((out["M"].reshape(-1) - labels) ** 2).mean())
    recon = sum(((out[f"utt_{m}_recon"] - out[f"utt_{m}_orig"]) ** 2).mean() for m in "tva") / 3
    torch.testing.assert_close(terms["recon"], recon)
    x = torch.randn(6, 4)
    assert float(cmd(x, x, 5)) == 0.0 and float(cmd(x, x + 1, 5)) == pytest.approx(2.0)  # only the means differ
    same = {f"utt_{k}_{m}": x for k in ("private", "shared") for m in "tva"}
    centred = x - x.mean(0)
    rows = centred / (centred.norm(dim=1, keepdim=True) + 1e-6)
    torch.testing.assert_close(diff_loss(same), 6 * ((rows.t() @ rows) ** 2).mean())  # a sum over 6 pairs
    for weight, name in (("task", "task_mse"), ("diff", "diff"), ("sim", "similarity_cmd"), ("recon", "recon")):
        off = apply_overrides(cfg, {f"loss.{weight}": 0.0})
        with torch.no_grad():
            rest = IMPL.loss_terms(out, labels, off)
        assert name not in rest and set(rest) == set(terms) - {name}, weight
        torch.testing.assert_close(rest["total"], terms["total"] - weights[name] * terms[name])
    with pytest.raises(DLFError, match="loss.task, loss.diff, loss.sim and loss.recon are all 0"):
        build_config("mosi", ("--set", {"model.family": "misa", "loss.task": 0, "loss.diff": 0, "loss.sim": 0,
                                        "loss.recon": 0}))


def test_every_used_parameter_gets_a_gradient_and_the_features_mode_runs_on_lanes():
    from dlf.train.loop import Runtime, _lane_pool

    model, cfg = features_model()
    assert IMPL.param_groups is None and model.text_encoder is None  # MMSA: one Adam group at train.lr
    text, audio, vision, labels = batch()
    model.train()
    out = model(text, audio, vision)
    assert IMPL.prediction(out).shape == (5,)
    IMPL.loss_terms(out, labels, cfg)["total"].backward()
    unused = ("sp_discriminator.", "tlayer_norm.")  # built by MMSA, read by no loss (no gradient there either)
    for name, p in model.named_parameters():
        if name.startswith(unused):
            assert p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    # every dropout draws from the micro-batch's own generator: the two micro-batches of a window may overlap
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # a budget for two lanes, whatever an earlier test left
    try:
        assert _lane_pool(model, cfg, torch.device("cpu"), Runtime(lanes=2)).lanes == 2
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_two_lanes_train_exactly_like_one(tiny_mosi_unaligned):
    from dlf.data.mmsa import load_dataset
    from dlf.study.catalogue import get_variant, variant_config
    from dlf.train.loop import Runtime, train_run

    data = load_dataset(str(tiny_mosi_unaligned))
    cfg = variant_config("mosi", get_variant("misa"), {"model.text_encoder": "features", **SMALL, "train.max_epochs": 1})
    one = train_run(cfg, data, Runtime(device="cpu", threads=1, lanes=1))
    two = train_run(cfg, data, Runtime(device="cpu", threads=2, lanes=2))
    assert one.history == two.history and one.test == two.test


def test_configs_misa_cannot_run_are_one_line_errors():
    with pytest.raises(DLFError, match=r"model.modalities=\['l', 'a'\]: MISA encodes and fuses all three"):
        build_config("mosi", ("--set", {"model.family": "misa", "model.modalities": "la"}))
    with pytest.raises(DLFError, match=r"model.hidden_size \(30\) must be divisible by model.fusion_heads \(4\)"):
        build_config("mosi", ("--set", {"model.family": "misa", "model.hidden_size": 30, "model.fusion_heads": 4}))
    with pytest.raises(DLFError, match="model.dropout=1.0 is out of range"):
        build_config("mosi", ("--set", {"model.family": "misa", "model.dropout": 1.0}))
