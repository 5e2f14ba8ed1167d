"""Parity with the official DLF code on its own random-init weights (fixture made by running pwang322/DLF).

The fixture lives beside the repository: ``<repo>/../shared/reference/official-parity`` (see its README).
"""
import csv
import json

import pytest
import torch
from parity_fixture import FIXTURE, inputs, load_data, needs_fixture

from dlf.config import preset
from dlf.models.dlf.official import convert_official_state
from dlf.models.dlf.losses import loss_terms

pytestmark = needs_fixture
HEADS = {"output_logit": lambda o: o.pred, "logits_c": lambda o: o.pred_shared,
         "logits_l_hetero": lambda o: o.pred_specific["l"], "logits_v_hetero": lambda o: o.pred_specific["v"],
         "logits_a_hetero": lambda o: o.pred_specific["a"]}
TERM_NAMES = {"task_all": "task_f", "task_c": "task_sh", "combined": "total"}


@pytest.fixture(scope="module")
def converted():
    torch.set_num_threads(1)
    meta = json.loads((FIXTURE / "meta.json").read_text())
    state = torch.load(FIXTURE / "official_state_dict.pt", map_location="cpu", weights_only=True)
    assert len(state) == meta["n_state_tensors"]
    return convert_official_state(state, meta["dataset_config"])


@pytest.fixture(scope="module")
def data():
    return load_data()


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_all_five_heads_match_official_outputs(converted, data, split):
    official = torch.load(FIXTURE / "official_outputs.pt", map_location="cpu", weights_only=True)[split]
    with torch.no_grad():
        out = converted.model(*inputs(data[split]))
    for name, get in HEADS.items():
        ours, ref = get(out), official[name].reshape(-1)
        assert ours.shape == ref.shape == (len(data[split]["regression_labels"]),)
        assert torch.allclose(ours, ref, atol=1e-5), f"{split} {name}: max diff {(ours - ref).abs().max():.2e}"


def test_every_loss_term_matches_official(converted, data):
    ref = json.loads((FIXTURE / "official_loss_terms.json").read_text())["terms"]
    train = data["train"]
    with torch.no_grad():
        out = converted.model(*inputs(train, 16))
    terms = loss_terms(out, torch.as_tensor(train["regression_labels"][:16]), preset("mosi"))
    assert set(terms) == {TERM_NAMES.get(k, k) for k in ref}
    for name, value in ref.items():
        assert terms[TERM_NAMES.get(name, name)].item() == pytest.approx(value, abs=1e-5), name


def test_converted_model_has_the_official_used_parameter_count(converted):
    from dlf.models.dlf.model import parameter_summary

    assert parameter_summary(converted.model)["total"] == 1_628_605
    assert "trans_a_with_l" in converted.dropped and "proj_cosine_l" in converted.dropped


@pytest.mark.slow
def test_cli_convert_and_evaluate_reproduce_output_logit(tmp_path, monkeypatch):
    from dlf.cli import main

    monkeypatch.setenv("DLF_CACHE", str(tmp_path / "cache"))
    ckpt, pred = tmp_path / "dlf.pt", tmp_path / "pred.csv"
    for argv in (["convert-official", str(FIXTURE / "official_state_dict.pt"), "--dataset", str(FIXTURE / "data.pkl"),
                  "--out", str(ckpt)],
                 ["evaluate", "--checkpoint", str(ckpt), "--dataset", str(FIXTURE / "data.pkl"), "--split", "test",
                  "--predictions", str(pred), "--json"]):
        monkeypatch.setattr("sys.argv", ["dlf-ablate", *argv])
        with pytest.raises(SystemExit) as exit_info:
            main()
        assert exit_info.value.code in (0, None)
    with open(pred, newline="") as fh:
        rows = list(csv.DictReader(fh))
    test = load_data()["test"]
    official = torch.load(FIXTURE / "official_outputs.pt", weights_only=True)["test"]["output_logit"].reshape(-1)
    assert [r["id"] for r in rows] == list(test["id"])
    assert [float(r["label"]) for r in rows] == pytest.approx(test["regression_labels"].tolist(), abs=1e-7)
    assert torch.allclose(torch.tensor([float(r["pred"]) for r in rows]), official, atol=1e-5)
