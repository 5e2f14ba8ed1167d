"""DMD (the authors' code, mdswyz/DMD) as a model family: parity with the official forward, the GD units'
edges and every loss term, through the CLI (convert-official + evaluate --outputs) and the library; the
parameter counts of README section 8; the import's refusals; short training runs and their checkpoints.
The model's behaviour (gradients, switches, config checks): tests/test_dmd_model.py."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import dmd_fixture as fx
from baseline_fixture import cli
from dlf.config import apply_overrides
from dlf.models.registry import implementation

IMPL = implementation("dmd")
TERM_NAMES = {"homo_repr_unused": "homo_repr", "combined": "total"}
ROWS = {"ortho_rows_l": "ortho_l", "ortho_rows_v": "ortho_v", "ortho_rows_a": "ortho_a", "ortho_rows": "ortho",
        "combined_with_ortho_rows": "total"}


@pytest.fixture(scope="module")
def converted():
    return IMPL.convert_official(fx.state(), "mosi", units=fx.unit_states())


def _unit_files(tmp_path: Path) -> list[str]:
    args = []
    for unit in fx.UNITS:
        args += [f"--{unit.replace('_', '-')}", str(fx.DMD / f"{unit}_state_dict.pt")]
    return args


def _compare(got: dict[str, np.ndarray], split: str, worst: dict[str, float]) -> None:
    want, units = fx.outputs()[split], fx.outputs()["gd_units"][split]
    extra = {f"{e}_{k}" for e in ("edges", "edge_logits") for k in ("homo", "hetero")} | {"fused", "c_fusion"}
    assert set(got) - {"id", "label"} == set(want) | extra  # ours: the units' edges and the features hook's inputs
    pairs = [(name, got[name], fx.ours(name, value.numpy())) for name, value in want.items()]
    for kind in ("homo", "hetero"):  # official (6, N) weights and (6, 1) batch sums of the edge logits
        pairs.append((f"edges_{kind}", got[f"edges_{kind}"].T, units[f"edges_{kind}"].numpy()))
        pairs.append((f"edges_origin_{kind}", got[f"edge_logits_{kind}"].sum(0)[:, None],
                      units[f"edges_origin_{kind}"].numpy()))
    for name, ours, ref in pairs:
        assert ours.shape == ref.shape, (split, name)
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5, err_msg=f"{split} {name}")
        worst[name] = max(worst.get(name, 0.0), float(np.abs(ours - ref).max()))


@fx.needs_fixture
@pytest.mark.slow  # four CLI processes
def test_cli_import_with_unit_files_reproduces_every_official_output_and_edge(tmp_path):
    ckpt = tmp_path / "dmd.pt"
    conv = cli("convert-official", fx.DMD / "state_dict.pt", "--family", "dmd", "--dataset", fx.DATA, "--out", ckpt,
               *_unit_files(tmp_path))
    assert conv.returncode == 0, conv.stderr
    assert "dmd, features text mode" in conv.stdout
    worst: dict[str, float] = {}
    for split in ("train", "valid", "test"):
        out = tmp_path / f"{split}.npz"
        ev = cli("evaluate", "--checkpoint", ckpt, "--dataset", fx.DATA, "--split", split, "--outputs", out, "--json")
        assert ev.returncode == 0, ev.stderr
        with np.load(out) as z:
            _compare({k: z[k] for k in z.files}, split, worst)
    print("max abs diff per output:", json.dumps(worst, indent=0), file=sys.stderr)


@fx.needs_fixture
@pytest.mark.slow  # imports, saves and reloads the full-size model
def test_one_file_with_the_units_under_their_prefixes_imports_the_same_weights(tmp_path, converted):
    from dlf.train.checkpoint import load_checkpoint
    from dlf.train.convert import convert_official

    joined = {**fx.state(), **{f"{u}.{k}": v for u, s in fx.unit_states().items() for k, v in s.items()}}
    torch.save(joined, tmp_path / "joined.pt")
    convert_official(tmp_path / "joined.pt", str(fx.DATA), tmp_path / "dmd.pt", family="dmd")
    model, cfg, _ = load_checkpoint(tmp_path / "dmd.pt")
    assert cfg.model.family == "dmd" and cfg.model.text_encoder == "features"
    for key, value in converted.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert sum(p.numel() for p in model.gd_homo.parameters()) == fx.meta()["params"]["total"]["gd_homo"]


@fx.needs_fixture
def test_every_loss_term_matches_the_official_trainer_in_both_orthogonality_readings(converted, one_thread):
    ref = fx.loss_json()
    x, y = fx.split_inputs("train", 16)
    with torch.no_grad():
        out = converted.model(*x)
        official = IMPL.loss_terms(out, y, converted.config)
        rows = IMPL.loss_terms(out, y, apply_overrides(converted.config, {"loss.ortho_per_vector": True}))
    want = {TERM_NAMES.get(k, k): v for k, v in ref["terms"].items()}
    assert set(official) == set(rows) == set(want)
    for name, value in want.items():
        assert official[name].item() == pytest.approx(value, abs=1e-5), name
    assert official["total"].item() == pytest.approx(want["total"], rel=1e-6)
    want.update({ROWS[k]: v for k, v in ref["supplementary"].items()})  # the community fix: rows of d channels
    for name, value in want.items():
        assert rows[name].item() == pytest.approx(value, abs=1e-5), name


@fx.needs_fixture
def test_the_import_reads_the_geometry_and_counts_the_dead_projections(converted):
    assert (converted.dims, converted.seq_lens) == (fx.MOSI, fx.LENS)
    info = IMPL.summary(converted.model)
    params = fx.meta()["params"]
    assert info["total"] == params["total_all"] and info["text_encoder"] == 0
    assert info["components"]["proj_cosine"] == params["dead"]["dmd"]
    assert (info["components"]["gd_homo"], info["components"]["gd_hetero"]) == (3649, 3425)
    assert "features" in converted.notes[-2]


@pytest.mark.parametrize("corpus,total", [("mosi", 4_750_732),
                                          pytest.param("mosei", 1_797_292, marks=pytest.mark.slow)])
def test_features_mode_parameter_counts_are_the_official_ones(corpus, total):
    from dlf.study.catalogue import get_variant, model_summary, parameter_count

    var = get_variant("dmd")
    assert (var.group, var.label, var.order, var.overrides) == ("Baselines", "DMD", 109, {"model.family": "dmd"})
    assert parameter_count(var, corpus) == total
    dead = {"mosi": 345_150, "mosei": 129_690}[corpus]
    lean = model_summary(f"synthetic-{corpus}", "dmd", {"model.text_encoder": "features", "model.dead_projections": False})
    assert lean["total"] == total - dead and "proj_cosine" not in lean["components"]


@pytest.mark.slow  # a CLI process
def test_model_summary_through_the_cli():
    for dataset, total in (("synthetic-mosi", 4_750_732), ("synthetic-mosei", 1_797_292)):
        run = cli("model", "summary", "--variant", "dmd", "--dataset", dataset, "--set", "model.text_encoder=features",
                  "--json")
        assert run.returncode == 0, run.stderr
        info = json.loads(run.stdout)
        assert (info["total"], info["text_encoder"]) == (total, 0)
    assert info["components"]["crossmodal"] == 268_920 + 528_120  # MOSEI: cross-modal + memory stacks


@fx.needs_tiny_bert
@pytest.mark.slow  # a CLI process loading transformers
def test_model_summary_with_the_tiny_bert():
    run = cli("model", "summary", "--variant", "dmd", "--dataset", "synthetic-mosi", "--set", "model.text_encoder=bert",
              "--set", f"model.pretrained={fx.TINY_BERT}", "--json")
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout)
    assert info["total"] - info["text_encoder"] == 4_750_732 and info["text_encoder"] == 8_473_344


@pytest.mark.slow  # imports transformers
@pytest.mark.parametrize("corpus,total", [("mosi", 114_232_972), ("mosei", 111_279_532)])
def test_bert_base_shaped_count_is_the_official_total(corpus, total):
    from dlf.config import preset
    from dlf.models.registry import build_model

    bert_base = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
                 "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512,
                 "type_vocab_size": 2}
    cfg = apply_overrides(preset(corpus, "dmd"), {"model.text_encoder": "bert"})
    dims = {"mosi": fx.MOSI, "mosei": {"l": 768, "a": 74, "v": 35}}[corpus]
    with torch.device("meta"):
        info = IMPL.summary(build_model(cfg, dims, fx.LENS, bert_config=bert_base))
    assert (info["total"], info["text_encoder"]) == (total, 109_482_240)


@fx.needs_fixture
@pytest.mark.slow  # CLI processes
def test_bad_imports_are_one_line_and_write_nothing(tmp_path):
    from small_bert import save_bert

    out = tmp_path / "out.pt"

    def refused(*args) -> str:
        run = cli("convert-official", *args, "--dataset", fx.DATA, "--out", out)
        assert run.returncode == 2 and run.stderr.count("\n") == 1 and not out.exists(), run.stderr
        return run.stderr

    model = fx.DMD / "state_dict.pt"
    msg = refused(model, "--family", "dmd")
    assert "graph-distillation units gd_homo, gd_hetero are missing" in msg and "--fresh-units" in msg
    msg = refused(model, "--family", "dmd", "--gd-homo", fx.DMD / "gd_homo_state_dict.pt")
    assert "units gd_hetero are missing" in msg and "--gd-hetero FILE" in msg
    assert "keys are not part of the official DMD model: projector_a.bias" in refused(
        fx.ROOT / "official-parity" / "official_state_dict.pt", "--family", "dmd", "--fresh-units")
    assert "keeps no units apart from its model" in refused(model, "--family", "dlf", *_unit_files(tmp_path))
    assert "--gd-hetero nope.pt: file not found" in refused(model, "--family", "dmd", "--gd-hetero", "nope.pt")
    narrow = save_bert(tmp_path / "bert24", 24)
    msg = refused(model, "--family", "dmd", "--fresh-units", "--pretrained", narrow)
    assert "BERT width 24, but the weights expect 768" in msg


@pytest.mark.slow  # trains through the CLI
def test_short_training_run_saves_a_checkpoint_with_its_units(tmp_path, tiny_mosi):
    from dlf.train.checkpoint import load_checkpoint

    env = {**os.environ, "DLF_HOME": str(tmp_path / "home")}
    ckpt = tmp_path / "dmd.pt"
    run = cli("train", "--dataset", tiny_mosi, "--variant", "dmd", "--device", "cpu", "--set", "train.max_epochs=2",
              "--set", "train.accumulation=2", "--set", "model.text_encoder=features", "--save", ckpt, "--json", env=env)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["epochs"] == 2 and np.isfinite(result["test"]["mae"])
    model, cfg, meta = load_checkpoint(ckpt)  # resume: the units come back with the model
    trained = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert cfg.model.family == "dmd" and {k for k in trained if k.startswith("gd_")} == {
        f"{u}.{w}.{p}" for u in fx.UNITS for w in ("W_logit", "W_repr", "W_edge") for p in ("weight", "bias")}
    for key, value in model.state_dict().items():
        assert torch.equal(value, trained[key]), key
    ev = cli("evaluate", "--checkpoint", ckpt, "--dataset", tiny_mosi, "--split", "test", "--json", env=env)
    assert ev.returncode == 0 and json.loads(ev.stdout)["metrics"]["mae"] == pytest.approx(result["test"]["mae"])


@fx.needs_tiny_bert
@pytest.mark.slow  # fine-tunes the tiny BERT through the CLI
def test_short_training_run_with_the_tiny_bert(tmp_path, tiny_mosi, tiny_vocab):
    data = tiny_vocab(tiny_mosi, "tiny_512.pkl")
    env = {**os.environ, "DLF_HOME": str(tmp_path / "home")}
    common = ["--variant", "dmd", "--device", "cpu", "--set", "train.max_epochs=2", "--set", "train.accumulation=2",
              "--set", "model.text_encoder=bert", "--set", f"model.pretrained={fx.TINY_BERT}", "--json"]
    run = cli("train", "--dataset", data, *common, "--threads", "1", env=env)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["epochs"] == 2
    bad = cli("train", "--dataset", tiny_mosi, *common, env=env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "has a vocabulary of 512" in bad.stderr, bad.stderr
