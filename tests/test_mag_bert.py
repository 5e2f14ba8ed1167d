"""MAG-BERT (MMSA 2.2.1 BERT_MAG) as a model family: parity with MMSA's forward through the CLI, its loss,
parameter counts, the gate, gradients into BERT, checkpoints without the BERT folder, a short training
run and bad input."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import baseline_fixture as bf
from small_bert import save_bert
from dlf.config import apply_overrides, build_config, preset
from dlf.errors import DLFError
from dlf.models.registry import build_model, implementation

transformers = pytest.importorskip("transformers")
REPO = Path(__file__).resolve().parents[1]
TINY_BERT = bf.ROOT / "tiny-bert"  # the fixture's random 2-layer BERT, width 768, vocabulary 512
MOSI, LENS = {"l": 768, "a": 5, "v": 20}, {"l": 50, "a": 50, "v": 50}
FIXTURE = pytest.mark.skipif(not (bf.ROOT / "BERT_MAG" / "state_dict.pt").is_file()
                             or not (TINY_BERT / "model.safetensors").is_file(),
                             reason=f"parity fixture {bf.ROOT / 'BERT_MAG'} or its tiny BERT not present")
IMPL = implementation("mag_bert")


@pytest.fixture(scope="module")
def small_bert(tmp_path_factory) -> Path:
    """A random BERT of width 24 (vocabulary 512), saved like a pretrained folder: fast, and not 768 wide."""
    return save_bert(tmp_path_factory.mktemp("bert24"), 24)


def small_model(bert: Path, **overrides):
    cfg = apply_overrides(preset("mosi", "mag_bert"), {"model.pretrained": str(bert), **overrides})
    torch.manual_seed(0)
    return build_model(cfg, MOSI, LENS), cfg


def batch(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(103, 512, (n, 50), generator=g)
    lengths = torch.randint(6, 51, (n,), generator=g)
    mask = (torch.arange(50) < lengths[:, None]).long()
    ids = torch.where(mask.bool(), ids, 0)
    ids[:, 0] = 101
    text = torch.stack([ids, mask, torch.zeros_like(ids)], dim=1)  # (B, 3, T)
    return text, torch.randn(n, 50, 5, generator=g), torch.randn(n, 50, 20, generator=g), torch.rand(n, generator=g) * 6 - 3


def fixture_state(with_bert: bool = False) -> dict[str, torch.Tensor]:
    """MMSA's BERT_MAG state_dict in float32; ``with_bert``: the tiny BERT's tensors put back in."""
    state = bf.state_dict("BERT_MAG")
    if with_bert:
        from safetensors.torch import load_file

        prefix = bf.meta("BERT_MAG")["state_dict_excluded_bert"]["prefix"]
        state.update({prefix + k: v.float() for k, v in load_file(TINY_BERT / "model.safetensors").items()})
    return state


def fixture_data(tmp_path: Path) -> Path:
    """A copy of the aligned fixture pickle whose text_bert is what MMSA was fed (ids mod 512)."""
    with open(bf.data_path("BERT_MAG"), "rb") as fh:
        data = pickle.load(fh)
    fed = torch.load(bf.ROOT / "BERT_MAG" / "inputs_text_bert.pt", weights_only=True)
    for split, tokens in fed.items():
        data[split]["text_bert"] = tokens.numpy()
    out = tmp_path / "aligned_tiny_bert.pkl"
    with open(out, "wb") as fh:
        pickle.dump(data, fh, protocol=4)
    return out


@FIXTURE
@pytest.mark.slow  # four CLI processes, each loading transformers
def test_cli_import_without_bert_tensors_reproduces_mmsa(tmp_path):
    data, sd, ckpt = fixture_data(tmp_path), tmp_path / "bert_mag.pt", tmp_path / "mag_bert.pt"
    torch.save(fixture_state(), sd)
    conv = bf.cli("convert-official", sd, "--family", "mag_bert", "--pretrained", TINY_BERT, "--dataset", data,
                  "--out", ckpt)
    assert conv.returncode == 0, conv.stderr
    for split, want in bf.outputs("BERT_MAG").items():
        out = tmp_path / f"{split}.npz"
        ev = bf.cli("evaluate", "--checkpoint", ckpt, "--dataset", data, "--split", split, "--outputs", out, "--json")
        assert ev.returncode == 0, ev.stderr
        with np.load(out) as z:
            assert z["M"].shape == want["M"].shape
            np.testing.assert_allclose(z["M"], want["M"], rtol=0, atol=1e-5, err_msg=split)


def _fixture_inputs(split: str, n: int | None = None) -> list[torch.Tensor]:
    with open(bf.data_path("BERT_MAG"), "rb") as fh:
        raw = pickle.load(fh)[split]
    text = torch.load(bf.ROOT / "BERT_MAG" / "inputs_text_bert.pt", weights_only=True)[split]
    return [text[:n]] + [torch.tensor(np.asarray(raw[k], dtype=np.float32)[:n]) for k in ("audio", "vision")]


@FIXTURE
@pytest.mark.slow
def test_import_with_bert_tensors_needs_no_folder_and_gives_the_loss_terms():
    conv = IMPL.convert_official(fixture_state(with_bert=True), "mosi", dims=MOSI, seq_lens=LENS)
    assert conv.model.text_encoder.bert.config.hidden_size == 768 and conv.config.model.pretrained == "bert-base-uncased"
    with torch.no_grad():
        for split, want in bf.outputs("BERT_MAG").items():
            got = conv.model(*_fixture_inputs(split))["M"].numpy()
            np.testing.assert_allclose(got, want["M"], rtol=0, atol=1e-5, err_msg=split)
        with open(bf.data_path("BERT_MAG"), "rb") as fh:
            labels = torch.tensor(np.asarray(pickle.load(fh)["train"]["regression_labels"][:8], dtype=np.float32))
        terms = IMPL.loss_terms(conv.model(*_fixture_inputs("train", 8)), labels, conv.config)
    want = bf.loss_terms("BERT_MAG")
    assert set(terms) == set(want)
    for name, value in want.items():
        assert float(terms[name]) == pytest.approx(value, abs=1e-5), name
    zero = apply_overrides(conv.config, {"loss.task": 0.0})
    assert float(IMPL.loss_terms({"M": torch.ones(2, 1)}, torch.zeros(2), zero)["total"]) == 0.0


@FIXTURE
@pytest.mark.slow  # two CLI processes, each loading transformers and the tiny BERT
@pytest.mark.parametrize("dataset,total,outside", [("synthetic-mosi", 9_696_769, 1_223_425),
                                                   ("synthetic-mosei", 9_825_793, 1_352_449)])
def test_model_summary_gives_mmsa_parameter_counts_with_the_tiny_bert(dataset, total, outside):
    run = bf.cli("model", "summary", "--variant", "mag_bert", "--dataset", dataset,
                 "--set", f"model.pretrained={TINY_BERT}", "--json")
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout)
    assert (info["total"], info["text_encoder"]) == (total, 8_473_344)
    assert sum(info["components"].values()) == outside == info["total"] - info["text_encoder"]


def test_catalogue_counts_the_part_outside_bert_without_any_bert():
    from dlf.study.catalogue import get_variant, parameter_count

    var = get_variant("mag_bert")
    assert (var.group, var.label, var.order) == ("Baselines", "MAG-BERT", 108)
    assert parameter_count(var, "mosi") == 1_223_425 and parameter_count(var, "mosei") == 1_352_449


def test_presets_are_mmsa_configs_and_recipe():
    mosi, mosei = preset("mosi", "mag_bert"), preset("mosei", "mag_bert")
    assert (mosi.model.dropout_prob, mosei.model.dropout_prob, mosi.model.beta_shift) == (0.3, 0.2, 1.0)
    assert mosi.model.text_encoder == "bert" and mosi.model.pretrained == "bert-base-uncased"
    assert mosi.model.mag_layer_norm_eps == 1e-5 and mosi.data.aligned and mosei.data.aligned
    assert (mosi.train.batch_size, mosi.train.lr, mosei.train.batch_size, mosei.train.lr) == (32, 2e-5, 32, 1e-5)
    t = mosi.train
    assert (t.weight_decay, t.accumulation, t.clip_value, t.scheduler) == (0.0, 1, 0.0, "none")
    assert (t.val_loss, t.val_decimals, t.patience, t.max_epochs, t.min_delta) == ("mae", 4, 8, 1000, 1e-6)


def test_the_gate_shifts_by_at_most_beta_times_the_embedding(small_bert):
    model, _ = small_model(small_bert, **{"model.beta_shift": 0.5})
    mag = model.MAG.eval()
    assert mag.LayerNorm.eps == 1e-5 and model.text_encoder.bert.embeddings.LayerNorm.eps == 1e-12
    e, v, a = torch.randn(2, 7, 24), torch.randn(2, 7, 20) * 50, torch.randn(2, 7, 5) * 50
    h = torch.relu(mag.W_hv(torch.cat([v, e], -1))) * mag.W_v(v) + torch.relu(mag.W_ha(torch.cat([a, e], -1))) * mag.W_a(a)
    alpha = torch.clamp(e.norm(dim=-1) / (h.norm(dim=-1) + 1e-6) * 0.5, max=1.0)
    assert (alpha < 1).any()  # large audio-visual vectors are scaled down to 0.5 |e|
    want = torch.nn.functional.layer_norm(alpha[..., None] * h + e, (24,), mag.LayerNorm.weight, mag.LayerNorm.bias, 1e-5)
    torch.testing.assert_close(mag(e, v, a), want)
    with torch.no_grad():  # no audio-visual shift at all: |h| = 0 counts as 1, the output is LayerNorm(e)
        torch.testing.assert_close(mag(e, torch.zeros_like(v), torch.zeros_like(a)),
                                   torch.nn.functional.layer_norm(e, (24,), mag.LayerNorm.weight, mag.LayerNorm.bias, 1e-5))
    switched, _ = small_model(small_bert, **{"model.mag_layer_norm_eps": 1e-12})
    assert switched.MAG.LayerNorm.eps == 1e-12


def test_every_parameter_gets_a_gradient_and_bert_is_fine_tuned_on_one_lane(small_bert):
    from dlf.train.loop import Runtime, _lane_pool

    model, cfg = small_model(small_bert)
    assert IMPL.param_groups is None  # MMSA: one Adam group, BERT included, at train.lr
    text, audio, vision, labels = batch()
    model.train()
    IMPL.loss_terms(model(text, audio, vision), labels, cfg)["total"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert _lane_pool(model, cfg, torch.device("cpu"), Runtime(lanes=4)).lanes == 1  # BERT's dropout is torch's


def test_padding_tokens_do_not_change_the_output(small_bert):
    model, _ = small_model(small_bert)
    text, audio, vision, _ = batch()
    model.eval()
    changed, a2, v2 = text.clone(), audio.clone(), vision.clone()
    pad = text[:, 1] == 0
    changed[:, 0][pad] = 7
    a2[pad], v2[pad] = 3.0, -3.0
    with torch.no_grad():
        torch.testing.assert_close(model(text, audio, vision)["M"], model(changed, a2, v2)["M"], atol=1e-5, rtol=0)


def test_a_checkpoint_rebuilds_its_bert_without_the_folder(tmp_path, small_bert):
    import shutil

    from dlf.train.checkpoint import load_checkpoint, save_checkpoint

    folder = tmp_path / "bert"
    shutil.copytree(small_bert, folder)
    model, cfg = small_model(folder)
    save_checkpoint(tmp_path / "m.pt", model, cfg, MOSI, LENS, {"name": "x"})
    shutil.rmtree(folder)
    loaded, _, meta = load_checkpoint(tmp_path / "m.pt")
    assert meta["bert_config"]["hidden_size"] == 24
    text, audio, vision, _ = batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded(text, audio, vision)["M"], model.eval()(text, audio, vision)["M"])


def test_official_import_drops_id_buffers_and_refuses_incomplete_states(small_bert):
    model, _ = small_model(small_bert)
    ours = model.state_dict()
    mmsa = {("Model.model.bert." + k.removeprefix("text_encoder.bert.")) if k.startswith("text_encoder.")
            else ("Model.model.bert." + k if k.startswith("MAG.") else "Model.model." + k): v for k, v in ours.items()}
    old = {**mmsa, "Model.model.bert.embeddings.position_ids": torch.arange(64)[None]}
    conv = IMPL.convert_official(old, "mosi", dims=MOSI, seq_lens=LENS)
    assert conv.dropped == ["Model.model.bert.embeddings.position_ids"] and conv.dims == {"l": 24, "a": 5, "v": 20}
    for key, value in conv.model.state_dict().items():
        assert torch.equal(value, ours[key]), key
    partial = {k: v for k, v in mmsa.items() if k != "Model.model.bert.encoder.layer.1.output.dense.bias"}
    with pytest.raises(DLFError, match=r"1 tensors of MMSA's BERT_MAG are missing: Model\.model\.bert\.encoder\.layer\.1\.output\.dense\.bias"):
        IMPL.convert_official(partial, "mosi", dims=MOSI, seq_lens=LENS)
    no_gate = {k: v for k, v in mmsa.items() if k != "Model.model.bert.MAG.W_hv.bias"}
    with pytest.raises(DLFError, match=r"1 tensors of MMSA's BERT_MAG are missing: Model\.model\.bert\.MAG\.W_hv\.bias"):
        IMPL.convert_official(no_gate, "mosi", dims=MOSI, seq_lens=LENS)


def test_configs_mag_bert_cannot_run_are_one_line_errors():
    with pytest.raises(DLFError, match=r"model.text_encoder: expected one of \['bert'\], got 'features': MAG-BERT's "
                                       r"gate shifts the token embeddings inside BERT, so it has no features text mode$"):
        build_config("mosi", ("--set", {"model.family": "mag_bert", "model.text_encoder": "features"}))
    with pytest.raises(DLFError, match="model.modalities=\\['l', 'a'\\]: MAG-BERT shifts the text by audio and vision"):
        build_config("mosi", ("--set", {"model.family": "mag_bert", "model.modalities": "la"}))
    with pytest.raises(DLFError, match="model.dropout_prob=1.0 is out of range"):
        build_config("mosi", ("--set", {"model.family": "mag_bert", "model.dropout_prob": 1.0}))


@FIXTURE
@pytest.mark.slow
def test_bad_input_through_the_cli_is_one_line_and_writes_nothing(tmp_path, small_bert, tiny_mosi):
    out = tmp_path / "out.pt"
    features = bf.cli("model", "summary", "--variant", "mag_bert", "--set", "model.text_encoder=features", "--json")
    assert features.returncode == 2 and features.stderr.count("\n") == 1, features.stderr
    assert "model.text_encoder: expected one of ['bert'], got 'features'" in features.stderr
    sd = tmp_path / "bert_mag.pt"
    torch.save(fixture_state(), sd)
    narrow = bf.cli("convert-official", sd, "--family", "mag_bert", "--pretrained", small_bert, "--dataset", tiny_mosi,
                    "--out", out)
    assert narrow.returncode == 2 and narrow.stderr.count("\n") == 1 and not out.exists(), narrow.stderr
    assert "BERT width 24, but the weights expect 768 (Model.model.bert.MAG.W_v.weight, the gate)" in narrow.stderr
    tfn = tmp_path / "tfn.pt"
    torch.save({f"Model.{k}": v for k, v in build_model(preset("mosi", "tfn"), MOSI, LENS).state_dict().items()}, tfn)
    other = bf.cli("convert-official", tfn, "--family", "mag_bert", "--pretrained", TINY_BERT, "--dataset", tiny_mosi,
                   "--out", out)
    assert other.returncode == 2 and other.stderr.count("\n") == 1 and not out.exists(), other.stderr
    assert "keys are not part of MMSA's BERT_MAG: Model.audio_subnet" in other.stderr


@pytest.mark.slow
def test_a_short_training_run_through_the_cli(tmp_path, small_bert, tiny_mosi, tiny_vocab):
    data = tiny_vocab(tiny_mosi, "tiny_mosi_512.pkl")
    env = {**os.environ, "DLF_HOME": str(tmp_path / "home")}
    common = ["--variant", "mag_bert", "--set", f"model.pretrained={small_bert}", "--device", "cpu", "--threads", "1"]
    run = bf.cli("train", "--dataset", data, *common, "--set", "train.max_epochs=2", "--json", env=env)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["epochs"] == 2 and np.isfinite(result["test"]["mae"])
    bad = bf.cli("train", "--dataset", tiny_mosi, *common, "--set", "train.max_epochs=1", env=env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert "text_bert holds token id" in bad.stderr and "has a vocabulary of 512" in bad.stderr


def test_the_search_space_file_is_mmsa_grid_and_holds_both_presets():
    from dlf.tune.space import load_space

    space = load_space(REPO / "spaces" / "mag_bert.yaml", preset("mosi", "mag_bert"))
    assert set(space.paths) == {"model.dropout_prob", "train.batch_size", "train.lr"}
    for corpus in ("mosi", "mosei"):  # MMSA's own defaults are points of its grid
        assert set(space.baseline(preset(corpus, "mag_bert"))) == set(space.paths), corpus
