"""dlf.models.dlf.losses: hand-checked values, the vectorised triplet loss against plain loops, absent terms."""
import math

import pytest
import torch
import torch.nn.functional as F

from dlf.config import apply_overrides, preset
from dlf.models.dlf.losses import cosine_matrix, loss_terms, ortho_loss, sentiment_class, triplet_loss
from dlf.models.dlf.model import build_model

torch.set_num_threads(1)
DIMS, LENS = {"l": 12, "a": 5, "v": 7}, {"l": 9, "a": 9, "v": 9}


def loop_triplet(feats, labels, modality, definition, margin):
    """The official HingeLoss written as plain loops over anchors, positives and negatives."""
    r = feats.shape[0]
    total, kept = 0.0, 0
    for i in range(r):
        pos, neg = [], []
        for j in range(r):
            if definition == "official":
                same = labels[i].item() == labels[j].item()
                if same and j != i:
                    pos.append(j)
                elif not same:
                    neg.append(j)
            else:
                ci, cj = round_half_even(labels[i].item()), round_half_even(labels[j].item())
                if ci == cj and modality[i] != modality[j]:
                    pos.append(j)
                elif ci != cj and modality[i] == modality[j]:
                    neg.append(j)
        if not pos or not neg:
            continue
        acc = 0.0
        for p in pos:
            for n in neg:
                gap = margin * abs(labels[i].item() - labels[n].item())
                acc += max(0.0, gap - cos(feats[i], feats[p]) + cos(feats[i], feats[n]))
        total += acc / (len(pos) * len(neg))
        kept += 1
    return total / max(kept, 1)


def round_half_even(y):
    return float(round(min(max(y, -3.0), 3.0)))  # Python's round is half-to-even, like np.round


def cos(a, b):
    na = max(math.sqrt(float((a * a).sum()) + 1e-8), 1e-8)
    nb = max(math.sqrt(float((b * b).sum()) + 1e-8), 1e-8)
    return float((a * b).sum()) / (na * nb)


@pytest.mark.parametrize("definition", ["official", "paper"])
@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
def test_vectorised_triplet_matches_loops(definition, seed):
    g = torch.Generator().manual_seed(seed)
    b, m = 12, 3
    labels = (torch.randint(-15, 16, (b,), generator=g).float() / 5).repeat_interleave(m)  # 0.2 grid, repeats
    labels[:6] = labels[6:12]  # make sure some samples share an exact label
    feats = torch.randn(b * m, 10, generator=g, dtype=torch.float64)
    modality = torch.arange(m).repeat(b)
    got = triplet_loss(feats, labels.double(), modality, definition, 0.15)
    want = loop_triplet(feats, labels.double(), modality, definition, 0.15)
    assert got.item() == pytest.approx(want, abs=1e-6)


def test_triplet_hand_checked_values():
    feats = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([1.0, 1.0, 0.0])
    mod = torch.tensor([0, 1, 2])
    # anchors 0 and 1: one positive (cos 1), one negative (cos 1), margin 0.15 * |1 - 0| -> 0.15; anchor 2 has no positive
    assert triplet_loss(feats, labels, mod, "official", 0.15).item() == pytest.approx(0.15, abs=1e-6)
    # paper: negatives must share the modality, and all three rows are different modalities -> no anchor kept
    assert triplet_loss(feats, labels, mod, "paper", 0.15).item() == 0.0
    # a zero feature row stays finite thanks to the official 1e-8 stabilisers
    assert torch.isfinite(cosine_matrix(torch.zeros(2, 3))).all()


def test_sentiment_classes_round_half_to_even_and_clip():
    y = torch.tensor([-3.4, -2.5, -0.5, 0.4, 0.5, 1.5, 2.6])
    assert sentiment_class(y).tolist() == [-3.0, -2.0, -0.0, 0.0, 0.0, 2.0, 3.0]


@pytest.mark.parametrize("chunk", [50, 10])
def test_ortho_matches_cosine_embedding_loss(chunk):
    s, c = torch.randn(4, 7, 50), torch.randn(4, 7, 50)
    rows_s, rows_c = s.transpose(0, 1).reshape(-1, chunk), c.transpose(0, 1).reshape(-1, chunk)  # official (T, B, d)
    want = F.cosine_embedding_loss(rows_s, rows_c, torch.tensor([-1]))
    assert ortho_loss(s, c, chunk).item() == pytest.approx(want.item(), abs=1e-6)
    assert ortho_loss(s, -s, chunk).item() == 0.0  # negative cosine is not penalised


def _model(overrides=None):
    cfg = apply_overrides(preset("mosi"), overrides or {})
    torch.manual_seed(0)
    model = build_model(cfg, DIMS, LENS)
    g = torch.Generator().manual_seed(0)
    x = [torch.randn(4, 9, DIMS[m], generator=g) for m in "lav"]
    return model, cfg, model(*x), torch.tensor([0.4, -1.2, 0.4, 2.0])


def _weighted(terms, cfg):
    w = {"task_f": cfg.loss.beta_f, "task_sh": cfg.loss.beta_sh, "task_l": cfg.loss.beta_l, "task_a": cfg.loss.beta_a,
         "task_v": cfg.loss.beta_v, "recon": cfg.loss.lambda_r, "specific": cfg.loss.lambda_s,
         "triplet": cfg.loss.lambda_m, "ortho": cfg.loss.lambda_o}
    total = torch.zeros(())
    for k, v in terms.items():
        if k != "total":
            total = total + w[k] * v
    return total


def test_full_model_terms_and_total():
    model, cfg, out, y = _model()
    terms = loss_terms(out, y, cfg)
    assert set(terms) == {"task_f", "task_sh", "task_l", "task_a", "task_v", "recon", "specific", "triplet", "ortho",
                          "total"}
    assert terms["task_f"].item() == pytest.approx((out.pred - y).abs().mean().item(), abs=1e-7)
    recon = sum(((out.recon[m] - out.proj[m]) ** 2).mean() for m in "lav")
    assert terms["recon"].item() == pytest.approx(recon.item(), rel=1e-6)
    assert torch.equal(terms["total"], _weighted(terms, cfg))


@pytest.mark.parametrize("overrides,absent", [
    ({"loss.lambda_r": 0}, {"recon"}),
    ({"loss.lambda_s": 0, "loss.lambda_m": 0}, {"specific", "triplet"}),
    ({"loss.lambda_o": 0, "loss.beta_v": 0}, {"ortho", "task_v"}),
    ({"model.fdm": False}, {"recon", "specific", "triplet", "ortho"}),
    ({"model.hp": False}, {"task_sh", "task_l", "task_a", "task_v"}),
    ({"model.modalities": "la"}, {"task_v"}),
])
def test_disabled_terms_are_absent_and_total_is_the_weighted_rest(overrides, absent):
    model, cfg, out, y = _model(overrides)
    terms = loss_terms(out, y, cfg)
    assert not absent & set(terms)
    assert "task_f" in terms and len(terms) == 10 - len(absent)
    assert torch.equal(terms["total"], _weighted(terms, cfg))


def test_reconstruction_target_is_not_detached():
    """Official quirk: L_r also trains the input projection through its target X_m."""
    model, cfg, out, y = _model({"loss.lambda_s": 0, "loss.lambda_m": 0, "loss.lambda_o": 0, "loss.beta_f": 0,
                                 "loss.beta_sh": 0, "loss.beta_l": 0, "loss.beta_a": 0, "loss.beta_v": 0})
    terms = loss_terms(out, y, cfg)
    assert set(terms) == {"recon", "total"}
    x, xr = out.proj["a"], out.recon["a"]
    g, = torch.autograd.grad(terms["recon"], x, retain_graph=True)
    detached = sum(F.mse_loss(out.recon[m], out.proj[m].detach()) for m in "lav")
    g_detached, = torch.autograd.grad(detached, x, retain_graph=True)
    # the difference is exactly the target path: d/dX mean (X~ - X)^2 = -2 (X~ - X) / N
    assert torch.allclose(g - g_detached, -2 * (xr - x).detach() / x.numel(), atol=1e-8)


def test_paper_triplet_is_selectable_and_differs():
    model, cfg, out, y = _model({"model.triplet": "paper"})
    paper = loss_terms(out, y, cfg)["triplet"]
    official = loss_terms(out, y, apply_overrides(cfg, {"model.triplet": "official"}))["triplet"]
    assert paper.item() != official.item()
