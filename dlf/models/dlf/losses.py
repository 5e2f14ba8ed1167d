"""DLF loss terms, each returned separately (names as in docs/contracts.md), and their weighted total.

    total = beta_f L1(y) + beta_sh L1(y_sh) + sum_m beta_m L1(y_m)                       (L_MSA)
          + lambda_r L_r + lambda_s L_s + lambda_m L_m + lambda_o L_o                     (L_d)

Official computations (defaults; see docs/fidelity.md for where they differ from the paper):
- ``recon`` L_r = sum_m MSE(X~_m, X_m), X_m the Conv1d-projected input, not detached.
- ``specific`` L_s = sum_m MSE(S_m, S'_m), neither side detached.
- ``ortho`` L_o = sum_m mean over rows of max(0, cos(s_row, c_row)) (CosineEmbeddingLoss, target -1,
  margin 0, eps 1e-12), rows = S_m and C_m reshaped to width ``loss.ortho_chunk``.
- ``triplet`` L_m on the (B * M, d) triplet features, see :func:`triplet_loss`.
A term whose weight is zero, or whose component the model lacks, is not computed and is absent.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

from dlf.config import RunConfig

__all__ = ["loss_terms", "triplet_loss", "triplet_rows", "ortho_loss", "cosine_matrix", "TERMS"]

TERMS = ("task_f", "task_sh", "task_l", "task_a", "task_v", "recon", "specific", "triplet", "ortho")


def cosine_matrix(feats: torch.Tensor) -> torch.Tensor:
    """(R, F) -> (R, R) cosine similarities with the official stabilisers: norm = max(sqrt(|x|^2 + 1e-8), 1e-8)."""
    norm = (feats.pow(2).sum(1) + 1e-8).sqrt().clamp_min(1e-8)
    return (feats @ feats.t()) / (norm.unsqueeze(1) * norm.unsqueeze(0))


def sentiment_class(y: torch.Tensor) -> torch.Tensor:
    """The seven sentiment classes of Acc-7 (HN .. HP): round(clip(y, -3, 3)), ties to even as np.round."""
    return torch.round(y.clamp(-3, 3))


def triplet_loss(feats: torch.Tensor, labels: torch.Tensor, modality: torch.Tensor, definition: str = "official",
                 margin: float = 0.15) -> torch.Tensor:
    """Margin loss over rows ``feats`` (R, F) with float ``labels`` (R,) and ``modality`` ids (R,).

    For anchor i, positive p and negative n: max(0, margin * |y_i - y_n| - cos(i, p) + cos(i, n)),
    averaged over all (p, n) pairs of the anchor, then over the anchors that have both (0 if none).
    ``official``: positives = every other row with exactly the same float label (any modality),
    negatives = every row with a different label. ``paper``: positives = same sentiment class
    (:func:`sentiment_class`) in a different modality, negatives = different class in the same modality.
    """
    r = feats.shape[0]
    cos = cosine_matrix(feats)
    if definition == "official":
        same = labels.unsqueeze(1) == labels.unsqueeze(0)
        pos = same & ~torch.eye(r, dtype=torch.bool, device=feats.device)
        neg = ~same
    elif definition == "paper":
        cls = sentiment_class(labels)
        same_cls = cls.unsqueeze(1) == cls.unsqueeze(0)
        same_mod = modality.unsqueeze(1) == modality.unsqueeze(0)
        pos, neg = same_cls & ~same_mod, ~same_cls & same_mod
    else:
        raise ValueError(f"unknown triplet definition {definition!r}")
    gap = margin * (labels.unsqueeze(1) - labels.unsqueeze(0)).abs()  # (anchor, negative)
    hinge = ((gap + cos).unsqueeze(1) - cos.unsqueeze(2)).clamp_min(0)  # [i, p, n] = gap_in + cos_in - cos_ip
    pairs = pos.unsqueeze(2) & neg.unsqueeze(1)  # (R, R, R)
    n_pairs = pos.sum(1) * neg.sum(1)  # (R,)
    kept = n_pairs > 0
    per_anchor = (hinge * pairs).sum((1, 2)) / n_pairs.clamp_min(1)
    return (per_anchor * kept).sum() / kept.sum().clamp_min(1)


def ortho_loss(s: torch.Tensor, c: torch.Tensor, chunk: int) -> torch.Tensor:
    """mean over rows of max(0, cos) of S and C reshaped to (-1, chunk); as CosineEmbeddingLoss(target=-1)."""
    a, b = s.reshape(-1, chunk), c.reshape(-1, chunk)
    cos = (a * b).sum(1) / ((a.pow(2).sum(1) + 1e-12) * (b.pow(2).sum(1) + 1e-12)).sqrt()
    return cos.clamp_min(0).mean()


def triplet_rows(sim: Mapping[str, torch.Tensor], y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Interleave per sample (official order l, v, a): rows (B * M, d), labels (B * M,), modality ids."""
    mods = [m for m in ("l", "v", "a") if m in sim]
    feats = torch.stack([sim[m] for m in mods], dim=1)  # (B, M, d)
    b, k, d = feats.shape
    modality = torch.arange(k, device=y.device).repeat(b)
    return feats.reshape(b * k, d), y.repeat_interleave(k), modality


def loss_terms(out, labels: torch.Tensor, cfg: RunConfig) -> dict[str, torch.Tensor]:
    """Every active term of ``out`` (a ``DLFOutput``) against ``labels`` (B,), and ``total``."""
    lc = cfg.loss
    y = labels.reshape(-1).to(out.pred.dtype)
    terms: dict[str, torch.Tensor] = {}
    weights: dict[str, float] = {}

    def add(name: str, weight: float, available: bool, compute) -> None:
        if weight > 0 and available:
            terms[name], weights[name] = compute(), weight

    add("task_f", lc.beta_f, True, lambda: F.l1_loss(out.pred, y))
    add("task_sh", lc.beta_sh, out.pred_shared is not None, lambda: F.l1_loss(out.pred_shared, y))
    for m in ("l", "a", "v"):
        add(f"task_{m}", getattr(lc, f"beta_{m}"), m in out.pred_specific,
            lambda m=m: F.l1_loss(out.pred_specific[m], y))
    add("recon", lc.lambda_r, bool(out.recon),
        lambda: sum(F.mse_loss(out.recon[m], out.proj[m]) for m in out.recon))
    add("specific", lc.lambda_s, bool(out.specific_re),
        lambda: sum(F.mse_loss(out.specific[m], out.specific_re[m]) for m in out.specific_re))
    add("triplet", lc.lambda_m, bool(out.shared_sim),
        lambda: triplet_loss(*triplet_rows(out.shared_sim, y), cfg.model.triplet, lc.triplet_margin))
    add("ortho", lc.lambda_o, bool(out.specific),
        lambda: sum(ortho_loss(out.specific[m], out.shared[m], lc.ortho_chunk) for m in out.specific))
    total = sum((weights[k] * v for k, v in terms.items()), out.pred.new_zeros(()))
    terms["total"] = total
    return terms
