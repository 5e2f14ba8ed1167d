"""Every catalogue variant builds, runs forward and backward, trains every parameter it has, and
reports exactly the loss terms it enables; the full model overfits a tiny batch."""
from __future__ import annotations

import pytest
import torch

from dlf.study.catalogue import REFERENCE_SHAPES, get_variant, load_catalogue, variant_config
from dlf.config import apply_overrides

# DLF's variants (the baselines' catalogue entries have their own tests, tests/test_<family>.py)
VARIANTS = [n for n, v in load_catalogue().items() if variant_config("mosi", v).model.family == "dlf"]
DIMS, SEQ_LENS = REFERENCE_SHAPES["mosi"]
# Repeated labels give the triplet loss positives; an odd count keeps the L1 bias gradients
# (a mean of +-1 signs) from cancelling to exactly 0.
LABELS = torch.tensor([-1.2, 0.4, 0.4, 2.0, -1.2, 0.0, 1.6])


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> str:
    """A tiny random BERT saved locally (no hub access): what the bert variants load."""
    transformers = pytest.importorskip("transformers")
    conf = transformers.BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32, max_position_embeddings=64)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-bert")
    transformers.BertModel(conf).save_pretrained(path)
    return str(path)


def variant_cfg(name: str, request) -> object:
    cfg = variant_config("mosi", get_variant(name))
    if cfg.model.text_encoder != "features":
        cfg = apply_overrides(cfg, {"model.pretrained": request.getfixturevalue("tiny_bert")}, source="test")
    return cfg


def batch(cfg, n: int = len(LABELS), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    if cfg.model.text_encoder == "features":
        text = torch.randn(n, SEQ_LENS["l"], DIMS["l"], generator=g)
    else:  # (B, 3, T): input_ids, attention_mask, token_type_ids
        ids = torch.randint(1000, 3000, (n, SEQ_LENS["l"]), generator=g)
        text = torch.stack([ids, torch.ones_like(ids), torch.zeros_like(ids)], dim=1)
    audio = torch.randn(n, SEQ_LENS["a"], DIMS["a"], generator=g)
    vision = torch.randn(n, SEQ_LENS["v"], DIMS["v"], generator=g)
    return text, audio, vision


def expected_terms(cfg) -> set[str]:
    """Loss terms a config switches on (docs/contracts.md): weight > 0 and the component present."""
    m, w = cfg.model, cfg.loss
    terms = {"total"} | ({"task_f"} if w.beta_f > 0 else set())
    if m.hp:
        terms |= {"task_sh"} if w.beta_sh > 0 else set()
        terms |= {f"task_{x}" for x in m.modalities if getattr(w, f"beta_{x}") > 0}
    if m.fdm:
        weights = {"recon": w.lambda_r, "specific": w.lambda_s, "triplet": w.lambda_m, "ortho": w.lambda_o}
        terms |= {name for name, weight in weights.items() if weight > 0}
    return terms


FAST_VARIANTS = {"full", "only_a", "wo_fdm", "wo_lfa", "wo_hp", "wo_lm"}  # one of each kind; BERT loads transformers


@pytest.mark.parametrize("name", [pytest.param(v, marks=() if v in FAST_VARIANTS else pytest.mark.slow)
                                  for v in VARIANTS])
def test_variant_trains_every_parameter_and_reports_only_enabled_terms(name, request):
    from dlf.models.dlf.losses import loss_terms
    from dlf.models.dlf.model import build_model, parameter_summary

    cfg = variant_cfg(name, request)
    torch.manual_seed(0)
    model = build_model(cfg, DIMS, SEQ_LENS).train()
    out = model(*batch(cfg))
    assert out.pred.shape == (len(LABELS),)
    terms = loss_terms(out, LABELS, cfg)
    assert set(terms) == expected_terms(cfg)
    assert all(t.ndim == 0 and torch.isfinite(t) for t in terms.values())
    terms["total"].backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if cfg.model.text_encoder == "bert_frozen":
        frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        assert frozen == parameter_summary(model)["text_encoder"] > 0
    # A disabled part must not be built: every trainable parameter is reached by the loss.
    no_grad = [n for n, p in trainable.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []
    assert all(torch.isfinite(p.grad).all() for p in trainable.values())


@pytest.mark.parametrize("name", ["only_a", "wo_fdm", "wo_hp"])
def test_total_is_the_weighted_sum_of_the_terms(name):
    from dlf.models.dlf.losses import loss_terms
    from dlf.models.dlf.model import build_model

    cfg = variant_config("mosi", get_variant(name))
    torch.manual_seed(1)
    model = build_model(cfg, DIMS, SEQ_LENS).eval()
    with torch.no_grad():
        terms = loss_terms(model(*batch(cfg)), LABELS, cfg)
    weight = {"task_f": cfg.loss.beta_f, "task_sh": cfg.loss.beta_sh, "task_l": cfg.loss.beta_l,
              "task_a": cfg.loss.beta_a, "task_v": cfg.loss.beta_v, "recon": cfg.loss.lambda_r,
              "specific": cfg.loss.lambda_s, "triplet": cfg.loss.lambda_m, "ortho": cfg.loss.lambda_o}
    total = sum(weight[k] * v for k, v in terms.items() if k != "total")
    assert terms["total"].item() == pytest.approx(total.item(), rel=1e-5)


@pytest.mark.slow
def test_full_model_overfits_a_tiny_batch():
    """30 Adam steps on 7 samples cut the final head's L1 at least 5-fold (about 10-fold measured).

    Dropout is off (it only slows fitting) and the sequences are short (speed); the full loss trains.
    """
    from dlf.models.dlf.losses import loss_terms
    from dlf.models.dlf.model import build_model

    no_dropout = {f"model.{k}": 0.0 for k in ("text_dropout", "attn_dropout", "attn_dropout_a", "attn_dropout_v",
                                               "embed_dropout", "relu_dropout", "res_dropout", "output_dropout")}
    cfg = variant_config("mosi", get_variant("full"), no_dropout)
    lens = {m: 12 for m in SEQ_LENS}
    torch.manual_seed(0)
    model = build_model(cfg, DIMS, lens)
    g = torch.Generator().manual_seed(3)
    inputs = [torch.randn(len(LABELS), lens[m], DIMS[m], generator=g) for m in ("l", "a", "v")]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def final_l1() -> float:
        model.eval()
        with torch.no_grad():
            return (model(*inputs).pred - LABELS).abs().mean().item()

    before = final_l1()
    model.train()
    for _ in range(30):
        optimizer.zero_grad()
        loss_terms(model(*inputs), LABELS, cfg)["total"].backward()
        optimizer.step()
    after = final_l1()
    assert after < before / 5, (before, after)
