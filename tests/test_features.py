"""The ``features`` hook of the model seam and ``evaluate --features``: each family's per-sample
representations (``fused`` first, then its branches), the values the model itself computes."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from misa_helpers import batch, features_model

from dlf.config import apply_overrides, preset
from dlf.errors import DLFError
from dlf.models.registry import build_model, feature_families, features, implementation

MOSI = {"l": 768, "a": 5, "v": 20}
SMALL_DLF = {"model.d_model": 10, "model.n_heads": 2, "loss.ortho_chunk": 10, "model.n_levels": 1,
             "model.mem_levels": 1}


def _dlf(**overrides):
    cfg = apply_overrides(preset("mosi"), {**SMALL_DLF, **overrides})
    torch.manual_seed(0)
    model = build_model(cfg, MOSI, {"l": 12, "a": 12, "v": 12}).eval()
    x = [torch.randn(3, 12, 768), torch.randn(3, 12, 5), torch.randn(3, 12, 20)]
    return model, x


def test_dlf_fused_vector_is_what_its_final_head_reads():
    model, x = _dlf()
    with torch.no_grad():
        out = model(*x, with_losses=False)
        got = features(model, out)
        assert list(got)[0] == "fused"
        assert set(got) == {"fused", "shared", *(f"{b}_{m}" for b in ("specific", "enhanced") for m in "lav")}
        torch.testing.assert_close(model.final_head.predict(model.final_head(got["fused"])), out.pred, rtol=0, atol=0)
        torch.testing.assert_close(model.shared_head.predict(model.shared_head(got["shared"])), out.pred_shared,
                                   rtol=0, atol=0)
    assert got["fused"].shape == (3, 6 * 10) and got["shared"].shape == (3, 30)
    assert all(got[f"specific_{m}"].shape == (3, 10) for m in "lav")


@pytest.mark.parametrize("overrides, widths", [
    ({"model.fdm": False}, {"fused": 60, "shared": 30}),
    ({"model.modalities": ["l", "a"]}, {"fused": 40, "shared": 20}),
    ({"model.lfa": False}, {"fused": 90, "shared": 30}),  # w/o LFA: each enhanced vector is 2d wide
])
def test_dlf_variants_expose_their_own_widths(overrides, widths):
    model, x = _dlf(**overrides)
    with torch.no_grad():
        got = features(model, model(*x, with_losses=False))
    assert {k: v.shape[1] for k, v in got.items() if k in widths} == widths
    assert {k.split("_")[-1] for k in got if "_" in k} == set(model.modalities)


def test_mult_and_lf_dnn_give_mmsa_fusion_vectors():
    cfg = apply_overrides(preset("mosi", "mult"), {"model.d_model": 10, "model.n_heads": 2, "model.n_levels": 1})
    torch.manual_seed(0)
    mult = build_model(cfg, MOSI, {"l": 12, "a": 15, "v": 18}).eval()
    with torch.no_grad():
        out = mult(torch.randn(3, 12, 768), torch.randn(3, 15, 5), torch.randn(3, 18, 20))
    got = features(mult, out)
    assert got["fused"] is out["Feature_f"] and got["enhanced_l"] is out["Feature_t"] and got["fused"].shape == (3, 60)
    lf = build_model(apply_overrides(preset("mosi", "lf_dnn"), {"model.modalities": ["l", "a"]}), MOSI,
                     {"l": 12, "a": 12, "v": 12}).eval()
    with torch.no_grad():
        out = lf(torch.randn(3, 12, 768), torch.randn(3, 12, 5), torch.randn(3, 12, 20))
    assert set(features(lf, out)) == {"fused", "unimodal_l", "unimodal_a"}  # the subset's vectors only


def test_misa_fused_vector_is_what_its_fusion_head_reads():
    model, _ = features_model()
    model.eval()
    text, audio, vision, _ = batch()
    with torch.no_grad():
        out = model(text, audio, vision)
        got = features(model, out)
        torch.testing.assert_close(model.fusion(got["fused"]), out["M"], rtol=0, atol=0)
    assert got["fused"].shape == (5, 6 * 16) and got["specific_l"] is out["utt_private_t"]


def test_a_family_without_the_hook_is_refused_in_one_line():
    tfn = build_model(preset("mosi", "tfn"), MOSI, {"l": 12, "a": 12, "v": 12})
    assert implementation("tfn").features is None
    with pytest.raises(DLFError, match=r"model family 'tfn' exposes no features; families that do: .*dlf"):
        features(tfn, {})
    assert {"dlf", "mult", "misa", "lf_dnn"} <= set(feature_families())


def _evaluate(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    from dlf.cli import main

    monkeypatch.setattr(sys, "argv", ["dlf-ablate", "evaluate", *map(str, args)])
    with pytest.raises(SystemExit) as done:
        main()
    out = capsys.readouterr()
    return done.value.code or 0, out.out, out.err


def _train(tmp_path, data, family_overrides: dict):
    from dlf.config import build_config
    from dlf.data.mmsa import load_dataset
    from dlf.train.checkpoint import dataset_meta, save_checkpoint
    from dlf.train.loop import Runtime, train_run

    cfg = build_config("mosi", ("test", {**family_overrides, "train.max_epochs": 1}))
    ds = load_dataset(str(data), cfg.data)
    result = train_run(cfg, ds, Runtime(device="cpu", progress=False))
    return save_checkpoint(tmp_path / f"{cfg.model.family}.pt", result.state_dict, cfg, ds.dims, ds.seq_lens,
                           dataset_meta(ds)), result


@pytest.mark.slow  # trains two tiny models
def test_evaluate_features_writes_every_vector_with_ids_labels_and_classes(tmp_path, tiny_mosi, monkeypatch, capsys):
    ckpt, result = _train(tmp_path, tiny_mosi, {**SMALL_DLF, "train.accumulation": 1})
    out = tmp_path / "feats" / "test.npz"
    code, stdout, err = _evaluate(monkeypatch, capsys, "-c", ckpt, "-d", tiny_mosi, "--features", out, "--json")
    assert code == 0, err
    assert json.loads(stdout)["features"] == str(out)
    with np.load(out) as z:
        n = len(result.test_predictions["id"])
        assert {"fused", "shared", "specific_l", "enhanced_v", "id", "label", "class7"} <= set(z.files)
        assert z["fused"].shape == (n, 60) and z["fused"].dtype == np.float32
        assert list(z["id"]) == list(result.test_predictions["id"])
        np.testing.assert_array_equal(z["class7"], np.round(np.clip(z["label"], -3, 3)) + 3)
    tfn, _ = _train(tmp_path, tiny_mosi, {"model.family": "tfn", "train.batch_size": 16})
    code, _, err = _evaluate(monkeypatch, capsys, "-c", tfn, "-d", tiny_mosi, "--features", tmp_path / "t.npz")
    assert code == 2 and err.count("\n") == 1 and "model family 'tfn' exposes no features" in err
    assert not (tmp_path / "t.npz").exists()
