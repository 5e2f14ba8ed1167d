"""dlf.models.dlf.official, dlf.train.convert: official names and shapes (MOSI from the fixture, MOSEI built from the reference), errors,
BERT weights, and round trips through dlf-ablate checkpoints."""
import pickle

import numpy as np
import pytest
import torch
from parity_fixture import FIXTURE, needs_fixture

from dlf.train.checkpoint import load_checkpoint, save_checkpoint
from dlf.models.dlf.official import DEAD_MODULES, OFFICIAL_NAMES, convert_official_state
from dlf.train.convert import convert_official
from dlf.errors import DLFError
from dlf.models.dlf.model import parameter_summary

D = 50


def official_shapes(dims, kernel, seq_len=50):
    """Key -> shape of the official DLF state_dict (no BERT), written from the reference (section 2)."""
    t = seq_len - kernel + 1
    shapes = {}

    def encoder(name, layers):
        shapes[f"{name}.version"] = (1,)
        shapes[f"{name}.embed_positions._float_tensor"] = (1,)
        for i in range(layers):
            p = f"{name}.layers.{i}"
            shapes.update({f"{p}.self_attn.in_proj_weight": (3 * D, D), f"{p}.self_attn.in_proj_bias": (3 * D,),
                           f"{p}.self_attn.out_proj.weight": (D, D), f"{p}.self_attn.out_proj.bias": (D,),
                           f"{p}.fc1.weight": (4 * D, D), f"{p}.fc1.bias": (4 * D,), f"{p}.fc2.weight": (D, 4 * D),
                           f"{p}.fc2.bias": (D,)})
            for j in range(2):
                shapes[f"{p}.layer_norms.{j}.weight"] = shapes[f"{p}.layer_norms.{j}.bias"] = (D,)
        shapes[f"{name}.layer_norm.weight"] = shapes[f"{name}.layer_norm.bias"] = (D,)

    def linear(name, n_in, n_out):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (n_out, n_in), (n_out,)

    for m in "lav":
        shapes[f"proj_{m}.weight"] = (D, dims[m], kernel)
    for m in "lva":
        encoder(f"encoder_s_{m}", 2)
    encoder("encoder_c", 2)
    for m in "lva":
        shapes[f"decoder_{m}.weight"] = (D, 2 * D, 1)
    for kind in ("proj_cosine", "align_c"):
        for m in "lva":
            linear(f"{kind}_{m}", D * t, D)
    for m in "lva":
        encoder(f"self_attentions_c_{m}", 2)
    linear("proj1_c", 3 * D, 3 * D), linear("proj2_c", 3 * D, 3 * D), linear("out_layer_c", 3 * D, 1)
    for name in ("trans_l_with_a", "trans_l_with_v", "trans_a_with_l", "trans_a_with_v", "trans_v_with_l",
                 "trans_v_with_a", "trans_l_mem"):
        encoder(name, 2)
    encoder("trans_a_mem", 3), encoder("trans_v_mem", 3)
    for m in "lva":
        linear(f"proj1_{m}_low", D * t, D), linear(f"proj2_{m}_low", D, D * t), linear(f"out_layer_{m}_low", D * t, 1)
    for m in "lva":
        linear(f"proj1_{m}_high", D, D), linear(f"proj2_{m}_high", D, D), linear(f"out_layer_{m}_high", D, 1)
    for m in "lva":
        linear(f"projector_{m}", D, D)
    linear("projector_c", 3 * D, 3 * D)
    linear("proj1", 6 * D, 6 * D), linear("proj2", 6 * D, 6 * D), linear("out_layer", 6 * D, 1)
    return shapes


def random_state(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) for k, s in shapes.items()}


MOSI_SHAPES = official_shapes({"l": 768, "a": 5, "v": 20}, 5)
MOSEI_SHAPES = official_shapes({"l": 768, "a": 74, "v": 35}, 3)


@needs_fixture
def test_reference_key_set_equals_the_real_official_state_dict():
    """The generator that builds the MOSEI key set reproduces the real MOSI state_dict exactly."""
    real = torch.load(FIXTURE / "official_state_dict.pt", map_location="cpu", weights_only=True)
    assert {k: tuple(v.shape) for k, v in real.items()} == MOSI_SHAPES
    assert sum(v.numel() for v in real.values()) == 2_923_340


@pytest.mark.slow
def test_mosei_names_shapes_and_round_trip(tmp_path):
    state = random_state(MOSEI_SHAPES)
    conv = convert_official_state(state, "mosei")
    assert conv.dims == {"l": 768, "a": 74, "v": 35} and conv.seq_lens == {"l": 50, "a": 50, "v": 50}
    assert conv.config.model.conv_kernel == 3 and conv.config.loss.ortho_chunk == 10
    assert conv.config.model.attn_dropout == 0.5  # the MOSEI preset
    assert parameter_summary(conv.model)["total"] == 1_576_905
    assert conv.model.triplet_proj["a"].weight.shape == (50, 50 * 48)
    assert set(conv.dropped) >= {"trans_a_with_l", "trans_v_with_a", "proj_cosine_v", "proj1_l_low"}
    path = save_checkpoint(tmp_path / "mosei.pt", conv.model, conv.config, conv.dims, conv.seq_lens, {"name": "mosei"})
    model, cfg, meta = load_checkpoint(path)
    assert cfg == conv.config and meta["dataset"] == {"name": "mosei"}
    ours = model.state_dict()
    n = 0
    for key, value in state.items():  # every used official tensor arrives unchanged under its new name
        top = key.split(".", 1)[0]
        if top in OFFICIAL_NAMES and not key.endswith(("version", "_float_tensor")):
            assert torch.equal(ours[OFFICIAL_NAMES[top] + key[len(top):]], value), key
            n += 1
    assert n == len(ours)


def test_unknown_and_missing_keys_are_listed():
    state = random_state(MOSI_SHAPES)
    with pytest.raises(DLFError, match=r"2 keys are not part of the official DLF model: extra\.a, extra\.b"):
        convert_official_state({**state, "extra.a": torch.zeros(1), "extra.b": torch.zeros(1)}, "mosi")
    lots = {f"junk{i}.w": torch.zeros(1) for i in range(30)}
    with pytest.raises(DLFError, match=r"\(\+22 more\)"):
        convert_official_state({**state, **lots}, "mosi")
    partial = {k: v for k, v in state.items() if not k.startswith("trans_v_mem.layers.2.")}
    with pytest.raises(DLFError, match=r"12 tensors of the DLF model are missing: trans_v_mem\.layers\.2\.fc1\.bias"):
        convert_official_state(partial, "mosi")
    bad = dict(state, **{"proj1.weight": torch.zeros(300, 299)})
    with pytest.raises(DLFError, match=r"proj1\.weight \(300, 299\) \(expected \(300, 300\)\)"):
        convert_official_state(bad, "mosi")


@pytest.mark.slow  # builds a BERT: loads transformers
def test_bert_weights_select_bert_mode(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=60)
    torch.manual_seed(0)
    bert = transformers.BertModel(cfg)  # with a pooler, as the official encoder has
    shapes = official_shapes({"l": 32, "a": 5, "v": 20}, 5)
    state = random_state(shapes)
    state.update({f"text_model.model.{k}": v for k, v in bert.state_dict().items()})
    conv = convert_official_state(state, "mosi")
    assert conv.config.model.text_encoder == "bert" and conv.model.text_encoder.width == 32
    assert conv.model.text_encoder.bert.config.num_attention_heads == 1  # inferred: max(1, 32 // 64)
    assert torch.equal(conv.model.text_encoder.bert.embeddings.word_embeddings.weight,
                       bert.embeddings.word_embeddings.weight)
    assert any(d.startswith("text_model.pooler") for d in conv.dropped)
    ids = torch.randint(1, 40, (2, 50))
    tokens = torch.stack([ids, torch.ones_like(ids), torch.zeros_like(ids)], dim=1)
    out = conv.model(tokens, torch.randn(2, 50, 5), torch.randn(2, 50, 20))
    assert out.pred.shape == (2,)
    path = save_checkpoint(tmp_path / "b.pt", conv.model, conv.config, conv.dims, conv.seq_lens, {})
    model, _, meta = load_checkpoint(path)  # rebuilt from the stored BertConfig: no download
    assert meta["bert_config"]["hidden_size"] == 32
    with torch.no_grad():
        assert torch.allclose(model(tokens, torch.zeros(2, 50, 5), torch.zeros(2, 50, 20)).pred,
                              conv.model(tokens, torch.zeros(2, 50, 5), torch.zeros(2, 50, 20)).pred)


def _pickle_like_fixture(path, audio_width):
    rng = np.random.default_rng(0)
    splits = {}
    for name, n in (("train", 8), ("valid", 4), ("test", 4)):
        splits[name] = {
            "text": rng.normal(size=(n, 50, 768)).astype(np.float32),
            "text_bert": np.stack([rng.integers(1, 100, (n, 50)), np.ones((n, 50)), np.zeros((n, 50))], 1).astype(np.float32),
            "audio": rng.normal(size=(n, 50, audio_width)).astype(np.float32),
            "vision": rng.normal(size=(n, 50, 35 if audio_width == 74 else 20)).astype(np.float32),
            "regression_labels": (rng.integers(-15, 16, n) / 5).astype(np.float32),
            "id": np.array([f"v$_${i}" for i in range(n)], dtype=object),
            "raw_text": np.array(["x"] * n, dtype=object),
        }
    with open(path, "wb") as fh:
        pickle.dump(splits, fh)
    return path


@pytest.mark.slow
def test_convert_refuses_wrong_dataset_and_existing_output(tmp_path):
    src = tmp_path / "official.pth"
    torch.save(random_state(MOSI_SHAPES), src)
    mosei_like = _pickle_like_fixture(tmp_path / "mosei_like.pkl", 74)
    with pytest.raises(DLFError, match="expect audio width 5 and length 50, but dataset .* has 74 and 50"):
        convert_official(src, str(mosei_like), tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()
    mosi_like = _pickle_like_fixture(tmp_path / "mosi_like.pkl", 5)
    out = tmp_path / "out.pt"
    convert_official(src, str(mosi_like), out)
    before = out.read_bytes()
    with pytest.raises(DLFError, match="file exists.*--force"):
        convert_official(src, str(mosi_like), out)
    assert out.read_bytes() == before
    with pytest.raises(DLFError, match="not a readable PyTorch checkpoint"):
        convert_official(mosi_like, str(mosi_like), tmp_path / "x.pt")


def test_dead_module_names_cover_every_unused_official_module():
    used = {k.split(".", 1)[0] for k in MOSI_SHAPES} - DEAD_MODULES
    assert used == set(OFFICIAL_NAMES)


@pytest.mark.slow
def test_evaluate_a_checkpoint_saved_from_a_state_dict(tmp_path, monkeypatch):
    """``train`` / ``run`` save the selected state_dict; ``evaluate`` must score it like a converted one."""
    import csv

    from dlf.train.checkpoint import evaluate_checkpoint
    from dlf.cli import main
    from dlf.config import preset
    from dlf.models.dlf.model import build_model

    data = _pickle_like_fixture(tmp_path / "tiny.pkl", 5)
    cfg = preset("mosi")
    dims, lens = {"l": 768, "a": 5, "v": 20}, {"l": 50, "a": 50, "v": 50}
    torch.manual_seed(3)
    model = build_model(cfg, dims, lens).eval()
    ckpt = save_checkpoint(tmp_path / "run.pt", model.state_dict(), cfg, dims, lens, {"name": "tiny"})
    with open(data, "rb") as fh:
        test = pickle.load(fh)["test"]
    with torch.no_grad():
        want = model(*(torch.as_tensor(test[k]) for k in ("text", "audio", "vision"))).pred
    result = evaluate_checkpoint(ckpt, str(data), "test")
    assert result.ids == list(test["id"]) and torch.allclose(torch.as_tensor(result.preds), want, atol=1e-6)
    pred = tmp_path / "p.csv"
    monkeypatch.setattr("sys.argv", ["dlf-ablate", "evaluate", "--checkpoint", str(ckpt), "--dataset", str(data),
                                     "--predictions", str(pred), "--json"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code in (0, None)
    with open(pred, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == list(test["id"])
    assert torch.allclose(torch.tensor([float(r["pred"]) for r in rows]), want, atol=1e-6)
    with pytest.raises(DLFError, match="--split 'dev'"):
        evaluate_checkpoint(ckpt, str(data), "dev")
    with pytest.raises(DLFError, match="checkpoint not found"):
        evaluate_checkpoint(tmp_path / "missing.pt", str(data))
