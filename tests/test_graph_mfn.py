"""The graph_mfn family (MMSA 2.2.1 Graph_MFN): parity with MMSA's own forward through the CLI, loss
terms, parameter counts, the frozen DFG node networks (buffers: saved, moved, never trained; switchable),
gradients, a short training run and bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import baseline_fixture as bf
from dlf.config import DataConfig, apply_overrides, build_config, preset
from dlf.data.mmsa import load_dataset
from dlf.errors import DLFError
from dlf.models.graph_mfn.dfg import NODES
from dlf.models.mfn.memory import avg_pool_align
from dlf.models.registry import build_model, implementation
from dlf.train.checkpoint import load_checkpoint, save_checkpoint
from dlf.tune.space import load_space

DIMS, LENS = {"l": 768, "a": 5, "v": 20}, {"l": 50, "a": 50, "v": 50}
NODE = "graph_mfn.networks."
SPACE = Path(__file__).resolve().parents[1] / "spaces" / "graph_mfn.yaml"


def unregistered() -> dict[str, torch.Tensor]:
    """The fixture's four DFG node networks, keys Model.graph_mfn.networks.<node>.<0|1.0>.<weight|bias>."""
    raw = torch.load(bf.ROOT / "Graph_MFN" / "unregistered_state.pt", map_location="cpu", weights_only=True)
    return {k: v.float() for k, v in raw.items()}


def first_train_batch(n: int = 8):
    split = load_dataset(str(bf.data_path("Graph_MFN")), DataConfig(aligned=True)).splits["train"]
    as_t = lambda x: torch.as_tensor(np.asarray(x[:n]), dtype=torch.float32)  # noqa: E731
    return as_t(split.text), as_t(split.audio), as_t(split.vision), as_t(split.labels).reshape(-1)


def nodes(model) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.startswith(NODE)}


@bf.needs("Graph_MFN")
@pytest.mark.slow
def test_outputs_match_mmsa_through_convert_and_evaluate(tmp_path):
    state = bf.state_dict("Graph_MFN") | unregistered()  # MMSA's state_dict plus the unregistered nodes
    got = bf.convert_and_evaluate(tmp_path, "graph_mfn", state, bf.data_path("Graph_MFN"))
    for split, outs in bf.outputs("Graph_MFN").items():
        assert set(outs) == {"M", "Efficacies"} and set(got[split]) == {"M", "Efficacies", "id", "label"}
        np.testing.assert_allclose(got[split]["M"], outs["M"], rtol=0, atol=1e-5, err_msg=split)
        efficacies = got[split]["Efficacies"].transpose(1, 0, 2)  # ours batch-first (N, T, 19); MMSA's (T, N, 19)
        np.testing.assert_allclose(efficacies, outs["Efficacies"], rtol=0, atol=1e-5, err_msg=split)


@bf.needs("Graph_MFN")
def test_loss_terms_match_mmsa_on_the_first_eight_train_samples():
    family = implementation("graph_mfn")
    model = family.convert_official(bf.state_dict("Graph_MFN") | unregistered(), "mosi").model
    text, audio, vision, labels = first_train_batch()
    with torch.no_grad():
        terms = family.loss_terms(model(text, audio, vision), labels, preset("mosi", "graph_mfn"))
    want = bf.loss_terms("Graph_MFN")
    assert set(terms) == set(want)
    for name, value in want.items():
        assert float(terms[name]) == pytest.approx(value, abs=1e-5)


@bf.needs("Graph_MFN")
def test_the_same_seed_builds_mmsas_initial_weights_node_networks_included():
    """Layers are created in MMSA's order (the pattern layer deep-copied into every node network), so
    torch.manual_seed(1111) gives the fixture's weights: MMSA's construction-time values in float16."""
    torch.manual_seed(1111)
    model = build_model(preset("mosi", "graph_mfn"), DIMS, LENS)
    want = bf.state_dict("Graph_MFN") | unregistered()
    assert set(want) == {"Model." + k for k in model.state_dict()}
    assert [k for k, v in model.state_dict().items() if not torch.equal(v.half().float(), want["Model." + k])] == []
    second = [model.graph_mfn.networks[n][1][0].weight for n in NODES] + [model.graph_mfn.t_network[1][0].weight]
    assert all(torch.equal(w, second[0]) for w in second)  # one pattern layer, copied five times


@bf.needs("Graph_MFN")
def test_without_the_node_networks_they_start_from_the_seed_with_a_note():
    conv = implementation("graph_mfn").convert_official(bf.state_dict("Graph_MFN"), "mosi", source="mmsa.pt")
    assert any("DFG node networks" in n and "torch.manual_seed(1111)" in n for n in conv.notes)
    want = unregistered()
    got = nodes(conv.model)
    assert len(got) == 16 and all(torch.equal(v.half().float(), want["Model." + k]) for k, v in got.items())


@bf.needs("Graph_MFN")
def test_some_but_not_all_node_networks_is_one_line():
    partial = bf.state_dict("Graph_MFN") | {k: v for k, v in unregistered().items() if ".0_1." in k}
    with pytest.raises(DLFError, match=r"12 tensors of MMSA's Graph_MFN are missing: Model.graph_mfn.networks.0_1_2"):
        implementation("graph_mfn").convert_official(partial, "mosi", source="mmsa.pt")


@pytest.mark.parametrize("dataset,total,frozen", [("synthetic-mosi", 2_110_624, 208_656),
                                                  ("synthetic-mosei", 675_792, 133_712)])
@pytest.mark.slow
def test_parameter_counts_are_mmsas_and_the_frozen_nodes_are_buffers(dataset, total, frozen):
    out = bf.cli("model", "summary", "--variant", "graph_mfn", "--dataset", dataset, "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["total"] == total == sum(info["components"].values()) and info["text_encoder"] == 0
    corpus = dataset.removeprefix("synthetic-")
    dims = DIMS if corpus == "mosi" else {"l": 768, "a": 74, "v": 35}
    model = build_model(preset(corpus, "graph_mfn"), dims, LENS)
    assert sum(v.numel() for v in nodes(model).values()) == frozen
    assert not any(n.startswith(NODE) for n, _ in model.named_parameters())
    trainable = build_model(apply_overrides(preset(corpus, "graph_mfn"), {"model.frozen_dfg_nodes": False}), dims, LENS)
    assert implementation("graph_mfn").summary(trainable)["total"] == total + frozen  # the documented deviation
    assert set(nodes(trainable)) == set(nodes(model))  # same names: checkpoints load either way


@pytest.mark.parametrize("frozen", [True, False])
def test_gradients_reach_every_parameter_and_the_frozen_nodes_get_none(frozen):
    cfg = apply_overrides(preset("mosi", "graph_mfn"), {"model.frozen_dfg_nodes": frozen})
    model = build_model(cfg, DIMS, LENS).eval()  # eval: no dropout mask can hide a parameter
    g = torch.Generator().manual_seed(0)
    x = [torch.randn(3, 4, DIMS[m], generator=g) for m in ("l", "a", "v")]
    implementation("graph_mfn").loss_terms(model(*x), torch.tensor([0.5, -1.0, 2.0]), cfg)["total"].backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []
    node_params = [n for n, _ in model.named_parameters() if n.startswith(NODE)]
    assert len(node_params) == (0 if frozen else 16)
    if frozen:  # buffers: no gradient, nothing for Adam (its groups hold model.parameters() only)
        assert all(not b.requires_grad and b.grad is None for b in nodes(model).values())


def test_the_frozen_nodes_move_with_the_model_and_round_trip_through_a_checkpoint(tmp_path):
    cfg = preset("mosi", "graph_mfn")
    model = build_model(cfg, DIMS, LENS)
    before = {k: v.clone() for k, v in nodes(model).items()}
    model.to(torch.float64)  # .to() casts (and on a GPU moves) the buffers with the parameters
    assert all(v.dtype == torch.float64 for v in nodes(model).values())
    out = model(*(torch.randn(2, 3, DIMS[m], dtype=torch.float64) for m in ("l", "a", "v")))
    assert out["M"].dtype == torch.float64 and out["Efficacies"].shape == (2, 3, 19)
    path = save_checkpoint(tmp_path / "g.pt", model.float(), cfg, DIMS, LENS, {"name": "synthetic"})
    restored, _, _ = load_checkpoint(path)
    assert all(torch.equal(v, before[k]) for k, v in nodes(restored).items()) and len(before) == 16


def test_the_recipe_is_mmsas():
    mosi, mosei = preset("mosi", "graph_mfn"), preset("mosei", "graph_mfn")
    assert (mosi.train.batch_size, mosi.train.lr, mosi.train.weight_decay) == (32, 2e-3, 5e-3)
    assert (mosei.train.batch_size, mosei.train.lr, mosei.train.weight_decay) == (64, 2e-3, 1e-3)
    for cfg in (mosi, mosei):
        t = cfg.train
        assert (t.accumulation, t.clip_value, t.scheduler, t.val_loss, t.val_decimals, t.patience) == \
            (1, 0.0, "none", "mae", 4, 8)
        assert cfg.data.aligned and cfg.model.frozen_dfg_nodes and cfg.model.shared_pattern_init


@pytest.mark.slow
def test_training_leaves_the_frozen_nodes_at_their_seeded_init(tiny_mosi, tmp_path):
    out = bf.cli("train", "--variant", "graph_mfn", "--dataset", tiny_mosi, "--set", "train.max_epochs=2",
                 "--threads", "1", "--save", tmp_path / "g.pt", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["epochs"] == 2
    trained, cfg, _ = load_checkpoint(tmp_path / "g.pt")
    torch.manual_seed(cfg.seed)  # the trainer seeds, then builds
    initial = build_model(cfg, DIMS, LENS)
    assert all(torch.equal(v, nodes(initial)[k]) for k, v in nodes(trained).items())
    assert not torch.equal(trained.out_fc2.weight, initial.out_fc2.weight)  # while the rest trained


def test_an_unaligned_file_is_aligned_to_the_text_steps_as_mmsas_amio_does(tiny_mosi_unaligned):
    split = load_dataset(str(tiny_mosi_unaligned), DataConfig(aligned=False)).splits["test"]
    text, audio, vision = (torch.as_tensor(np.asarray(x[:2]), dtype=torch.float32)
                           for x in (split.text, split.audio, split.vision))
    model = build_model(preset("mosi", "graph_mfn"), DIMS, {"l": 50, "a": 375, "v": 500}).eval()
    with torch.no_grad():
        out = model(text, audio, vision)
        aligned = model(text, avg_pool_align(audio, 50), avg_pool_align(vision, 50))
    assert out["Efficacies"].shape == (2, 50, 19)
    torch.testing.assert_close(out["M"], aligned["M"])


@pytest.mark.parametrize("corpus", ["mosi", "mosei"])
def test_the_search_space_is_mmsas_grid_and_valid_on_both_presets(corpus):
    space = load_space(SPACE, preset(corpus, "graph_mfn"))
    choices = {p.path: p.choices for p in space.params}
    assert choices["model.inner_node_dim"] == (20, 32, 64, 128) and choices["train.batch_size"] == (32, 64)
    assert "model.frozen_dfg_nodes" not in choices


def test_a_modality_subset_is_refused_in_one_line():
    with pytest.raises(DLFError, match=r"model.modalities=\['l', 'v'\]: graph_mfn fuses all three"):
        build_config("mosi", ("--set", {"model.family": "graph_mfn", "model.modalities": ["l", "v"]}))


@bf.needs("MFN")
@pytest.mark.slow
def test_a_state_dict_of_another_family_is_one_line_and_writes_nothing(tmp_path):
    sd, out = tmp_path / "mfn.pt", tmp_path / "out.pt"
    torch.save(bf.state_dict("MFN"), sd)
    r = bf.cli("convert-official", sd, "--family", "graph_mfn", "--dataset", bf.data_path("Graph_MFN"), "--out", out)
    assert r.returncode == 2 and not out.exists()
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "not part of MMSA's Graph_MFN" in lines[0]
    assert "Model.att1_fc1.weight" in lines[0]
