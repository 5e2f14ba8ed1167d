"""MISA (MMSA 2.2.1 ``misa``) as a model family: parity with MMSA's forward and loss terms through the CLI,
parameter counts with the tiny BERT and without BERT, the presets and the search space, BERT on one lane,
checkpoints without the BERT folder, the import's refusals and short training runs (the behaviour of
the model and its losses: tests/test_misa_model.py).

Tests that load transformers (BERT) are slow; fast ones cover the features mode and the import's checks."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import baseline_fixture as fx
from dlf.config import preset
from dlf.errors import DLFError
from dlf.models.registry import build_model, implementation
from misa_helpers import LENS, MOSI, batch, bert_model, features_model
from small_bert import save_bert

TINY_BERT = fx.ROOT / "tiny-bert"  # the fixture's random 2-layer BERT: width 768, vocabulary 512
FIXTURE = pytest.mark.skipif(not (fx.ROOT / "MISA" / "state_dict.pt").is_file()
                             or not (TINY_BERT / "model.safetensors").is_file(),
                             reason=f"parity fixture {fx.ROOT / 'MISA'} or its tiny BERT not present")
IMPL = implementation("misa")


@pytest.fixture(scope="module")
def small_bert(tmp_path_factory) -> Path:
    """A BERT of width 24: fast, and not 768 wide."""
    return save_bert(tmp_path_factory.mktemp("bert24"), 24)


def fixture_state(with_bert: bool = False) -> dict[str, torch.Tensor]:
    """MMSA's MISA state_dict in float32; ``with_bert``: the tiny BERT's tensors put back in (README 1.1)."""
    state = fx.state_dict("MISA")
    if with_bert:
        from safetensors.torch import load_file

        prefix = fx.meta("MISA")["state_dict_excluded_bert"]["prefix"]
        state.update({prefix + k: v.float() for k, v in load_file(TINY_BERT / "model.safetensors").items()})
    return state


def fixture_inputs(split: str, n: int | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
    with open(fx.data_path("MISA"), "rb") as fh:
        raw = pickle.load(fh)[split]
    inputs = [torch.tensor(np.asarray(raw[k], dtype=np.float32)[:n]) for k in ("text_bert", "audio", "vision")]
    return [inputs[0].long()] + inputs[1:], torch.tensor(np.asarray(raw["regression_labels"], dtype=np.float32)[:n])


@FIXTURE
@pytest.mark.slow  # four CLI processes, each loading transformers
def test_cli_import_without_bert_tensors_reproduces_every_mmsa_output(tmp_path):
    sd, ckpt, data = tmp_path / "misa_mmsa.pt", tmp_path / "misa.pt", fx.data_path("MISA")
    torch.save(fixture_state(), sd)
    conv = fx.cli("convert-official", sd, "--family", "misa", "--pretrained", TINY_BERT, "--dataset", data, "--out", ckpt)
    assert conv.returncode == 0, conv.stderr
    for split, want in fx.outputs("MISA").items():
        out = tmp_path / f"{split}.npz"
        ev = fx.cli("evaluate", "--checkpoint", ckpt, "--dataset", data, "--split", split, "--outputs", out, "--json")
        assert ev.returncode == 0, ev.stderr
        with np.load(out) as got:
            assert set(got.files) - {"id", "label"} == {k.removeprefix("attr.") for k in want}
            for name, value in want.items():
                ours = got[name.removeprefix("attr.")]
                assert ours.shape == value.shape, (split, name)
                np.testing.assert_allclose(ours, value, rtol=0, atol=1e-5, err_msg=f"{split} {name}")


@FIXTURE
@pytest.mark.slow  # loads transformers
def test_import_with_bert_tensors_needs_no_folder_and_gives_mmsa_loss_terms():
    conv = IMPL.convert_official(fixture_state(with_bert=True), "mosi", dims=MOSI, seq_lens=LENS)
    assert conv.model.text_encoder.bert.config.hidden_size == 768 and conv.config.model.pretrained == "bert-base-uncased"
    inputs, labels = fixture_inputs("train", 8)
    with torch.no_grad():
        out = conv.model(*inputs)
        np.testing.assert_allclose(out["M"].numpy(), fx.outputs("MISA")["train"]["M"][:8], rtol=0, atol=1e-5)
        terms = IMPL.loss_terms(out, labels, conv.config)
    want = fx.loss_terms("MISA")
    assert want.pop("domain") == 0.0  # MMSA's adversarial term: 0 under use_cmd_sim, not a term here
    assert set(terms) == set(want)
    for name, value in want.items():
        assert float(terms[name]) == pytest.approx(value, abs=1e-5), name


@FIXTURE
@pytest.mark.slow  # two CLI processes, each loading transformers and the tiny BERT
@pytest.mark.parametrize("dataset,total,outside", [("synthetic-mosi", 9_611_377, 1_138_033),
                                                   ("synthetic-mosei", 9_908_449, 1_435_105)])
def test_model_summary_gives_mmsa_parameter_counts_with_the_tiny_bert(dataset, total, outside):
    run = fx.cli("model", "summary", "--variant", "misa", "--dataset", dataset, "--set", f"model.pretrained={TINY_BERT}",
                 "--json")
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout)
    assert (info["total"], info["text_encoder"]) == (total, 8_473_344)
    assert sum(info["components"].values()) == outside
    per_module = {k.removeprefix("Model."): v for k, v in fx.meta("MISA")["params_per_module"].items()}
    if dataset == "synthetic-mosi":
        assert info["components"] == {k: v for k, v in per_module.items() if k != "bertmodel"}


@pytest.mark.parametrize("corpus,outside", [("mosi", 1_138_033), ("mosei", 1_435_105)])
@pytest.mark.slow
def test_the_features_mode_is_the_part_outside_bert(corpus, outside):
    from dlf.study.catalogue import get_variant, model_summary, parameter_count

    var = get_variant("misa")
    assert (var.group, var.label, var.order, var.overrides) == ("Baselines", "MISA", 107, {"model.family": "misa"})
    assert parameter_count(var, corpus) == outside
    info = model_summary(f"synthetic-{corpus}", "misa", {"model.text_encoder": "features"})
    assert (info["total"], info["text_encoder"]) == (outside, 0)
    assert info["components"]["tlayer_norm"] == 3072 and info["components"]["sp_discriminator"] == 516
    lean = model_summary(f"synthetic-{corpus}", "misa", {"model.text_encoder": "features", "model.unused_modules": False})
    assert lean["total"] == outside - 3072 - 516 and "tlayer_norm" not in lean["components"]


def test_presets_are_mmsa_configs_and_recipe():
    mosi, mosei = preset("mosi", "misa"), preset("mosei", "misa")
    assert (mosi.model.text_encoder, mosi.model.pretrained, mosi.model.hidden_size) == ("bert", "bert-base-uncased", 128)
    assert (mosi.model.dropout, mosei.model.dropout, mosi.model.av_length_from_text) == (0.2, 0.5, True)
    assert (mosi.loss.task, mosi.loss.diff, mosi.loss.sim, mosi.loss.recon) == (1.0, 0.1, 0.3, 1.0)
    assert (mosei.loss.task, mosei.loss.diff, mosei.loss.sim, mosei.loss.recon) == (1.0, 0.3, 0.8, 1.0)
    assert (mosi.train.batch_size, mosei.train.batch_size, mosi.train.lr, mosei.train.lr) == (16, 64, 1e-4, 1e-4)
    for t in (mosi.train, mosei.train):
        assert (t.weight_decay, t.accumulation, t.clip_value, t.scheduler) == (0.0, 2, 0.8, "none")
        assert (t.val_loss, t.val_decimals, t.patience, t.max_epochs, t.min_delta) == ("mse", 4, 8, 1000, 1e-6)
    assert not mosi.data.aligned and not mosei.data.aligned


@pytest.mark.slow  # loads transformers
def test_bert_is_fine_tuned_on_one_lane_and_a_checkpoint_rebuilds_it_without_the_folder(tmp_path, small_bert):
    import shutil

    from dlf.train.checkpoint import load_checkpoint, save_checkpoint
    from dlf.train.loop import Runtime, _lane_pool

    folder = tmp_path / "bert"
    shutil.copytree(small_bert, folder)
    model, cfg = bert_model(folder)
    text, audio, vision, labels = batch(bert=True)
    model.train()
    IMPL.loss_terms(model(text, audio, vision), labels, cfg)["total"].backward()
    for name, p in model.text_encoder.named_parameters():  # BERT learns, its pooler (unread) does not
        assert (p.grad is None) == (".pooler." in f".{name}"), name
    assert _lane_pool(model, cfg, torch.device("cpu"), Runtime(lanes=4)).lanes == 1  # BERT's dropout is torch's
    save_checkpoint(tmp_path / "m.pt", model, cfg, MOSI, LENS, {"name": "x"})
    shutil.rmtree(folder)
    loaded, _, meta = load_checkpoint(tmp_path / "m.pt")
    assert meta["bert_config"]["hidden_size"] == 24
    with torch.no_grad():
        torch.testing.assert_close(loaded(text, audio, vision)["M"], model.eval()(text, audio, vision)["M"])


@pytest.mark.slow  # loads transformers
def test_official_import_reads_sizes_drops_id_buffers_and_refuses_incomplete_states(tmp_path, small_bert):
    model, _ = bert_model(small_bert)
    ours = model.state_dict()
    mmsa = {"Model." + (k.replace("text_encoder.bert.", "bertmodel.model.")): v for k, v in ours.items()}
    old = {**mmsa, "Model.bertmodel.model.embeddings.position_ids": torch.arange(64)[None]}
    conv = IMPL.convert_official(old, "mosi", dims=MOSI, seq_lens=LENS)
    assert conv.dropped == ["Model.bertmodel.model.embeddings.position_ids"] and conv.dims == {"l": 24, "a": 5, "v": 20}
    assert (conv.config.model.hidden_size, conv.config.model.fusion_ff) == (16, 32)
    for key, value in conv.model.state_dict().items():
        assert torch.equal(value, ours[key]), key
    partial = {k: v for k, v in mmsa.items() if k != "Model.bertmodel.model.encoder.layer.1.output.dense.bias"}
    with pytest.raises(DLFError, match=r"1 tensors of MMSA's MISA are missing: Model\.bertmodel\.model\.encoder\.layer\.1"):
        IMPL.convert_official(partial, "mosi", dims=MOSI, seq_lens=LENS)
    wider = save_bert(tmp_path / "bert32", 32)
    with pytest.raises(DLFError, match=r"--pretrained .*bert32': BERT width 32, but the weights expect 24"):
        IMPL.convert_official(mmsa, "mosi", pretrained=str(wider), dims=MOSI, seq_lens=LENS)


@pytest.mark.slow
def test_another_familys_or_an_incomplete_state_dict_is_refused_before_any_bert_is_loaded():
    tfn = {f"Model.{k}": v for k, v in build_model(preset("mosi", "tfn"), MOSI, LENS).state_dict().items()}
    with pytest.raises(DLFError, match=r"keys are not part of MMSA's MISA: Model\.audio_subnet"):
        IMPL.convert_official(tfn, "mosi", dims=MOSI, seq_lens=LENS)
    dlf_state = build_model(preset("mosi"), MOSI, {"l": 50, "a": 50, "v": 50}).state_dict()
    with pytest.raises(DLFError, match="keys are not part of MMSA's MISA"):
        IMPL.convert_official(dlf_state, "mosi", dims=MOSI, seq_lens=LENS)


def test_an_incomplete_state_dict_is_refused_with_what_is_missing():
    model, _ = features_model()
    mmsa = {f"Model.{k}": v for k, v in model.state_dict().items() if not k.startswith("fusion.")}
    with pytest.raises(DLFError, match=r"4 tensors of MMSA's MISA are missing: Model\.fusion\.fusion_layer_1\.bias"):
        IMPL.convert_official(mmsa, "mosi", dims=MOSI, seq_lens=LENS)


@FIXTURE
@pytest.mark.slow  # CLI processes loading transformers
def test_bad_input_through_the_cli_is_one_line_and_writes_nothing(tmp_path, small_bert, tiny_mosi_unaligned):
    out, sd = tmp_path / "out.pt", tmp_path / "misa_mmsa.pt"
    torch.save(fixture_state(), sd)
    narrow = fx.cli("convert-official", sd, "--family", "misa", "--pretrained", small_bert, "--dataset",
                    tiny_mosi_unaligned, "--out", out)
    assert narrow.returncode == 2 and narrow.stderr.count("\n") == 1 and not out.exists(), narrow.stderr
    assert "BERT width 24, but the weights expect 768 (Model.project_t.project_t.weight)" in narrow.stderr
    tfn = tmp_path / "tfn.pt"
    torch.save({f"Model.{k}": v for k, v in build_model(preset("mosi", "tfn"), MOSI, LENS).state_dict().items()}, tfn)
    other = fx.cli("convert-official", tfn, "--family", "misa", "--pretrained", TINY_BERT, "--dataset",
                   tiny_mosi_unaligned, "--out", out)
    assert other.returncode == 2 and other.stderr.count("\n") == 1 and not out.exists(), other.stderr
    assert "keys are not part of MMSA's MISA: Model.audio_subnet" in other.stderr


@FIXTURE
@pytest.mark.slow  # trains the tiny BERT through the CLI
def test_short_training_runs_through_the_cli(tmp_path, tiny_mosi_unaligned, tiny_vocab):
    data = tiny_vocab(tiny_mosi_unaligned, "tiny_unaligned_512.pkl")
    env = {**os.environ, "DLF_HOME": str(tmp_path / "home")}
    common = ["--variant", "misa", "--device", "cpu", "--set", "train.max_epochs=2", "--json"]
    bert = fx.cli("train", "--dataset", data, *common, "--set", f"model.pretrained={TINY_BERT}", "--threads", "1", env=env)
    assert bert.returncode == 0, bert.stderr
    features = fx.cli("train", "--dataset", tiny_mosi_unaligned, *common, "--set", "model.text_encoder=features", env=env)
    assert features.returncode == 0, features.stderr
    for run in (bert, features):
        result = json.loads(run.stdout)
        assert result["epochs"] == 2 and np.isfinite(result["test"]["mae"])
    bad = fx.cli("train", "--dataset", tiny_mosi_unaligned, *common, "--set", f"model.pretrained={TINY_BERT}", env=env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert "text_bert holds token id" in bad.stderr and "has a vocabulary of 512" in bad.stderr


def test_the_search_space_file_is_mmsa_grid_and_holds_both_presets():
    from dlf.tune.space import default_space

    space = default_space(preset("mosi", "misa"), "mosi")
    assert space.source.endswith("misa.yaml")
    assert set(space.paths) == {"train.batch_size", "train.lr", "model.hidden_size", "model.dropout", "loss.diff",
                                "loss.sim", "loss.recon", "train.clip_value"}
    for corpus in ("mosi", "mosei"):  # MMSA's own defaults are points of the space
        assert set(space.baseline(preset(corpus, "misa"))) == set(space.paths), corpus
