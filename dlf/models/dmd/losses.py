"""DMD's loss terms as the official trainer (``DMD.do_train``) computes them, each returned by its name,
and their weighted total:

    total = task + homo_gd + hetero_gd + recon R + cycle C + margin M + ortho O
    task  = task_all L1(y) + task_c L1(y_c) + task_homo sum_m L1(y_m_homo) + task_hetero sum_m L1(y_m_hetero)
    homo_gd   = gd_homo   (homo_logit + homo_reg [+ homo_repr, only with loss.homo_repr_in_total])
    hetero_gd = gd_hetero (hetero_logit + hetero_repr + hetero_reg)

(official weights: every task term 1, gd 0.05, recon and cycle 0.1, margin and ortho 0.01).
- ``recon_m`` MSE(recon_m, origin_m) and ``cycle_m`` MSE(s_m, s_m_r): neither side detached; R, C the sums.
- ``margin``: DLF's official margin loss (dlf.models.dlf.losses.triplet_loss) on the rows
  [c_l_sim, c_v_sim, c_a_sim] per sample.
- ``ortho_m``: mean of max(0, cos(s_m, c_m)) with the cosine over the batch axis for every (step, channel)
  cell (PyTorch 1.9 on the official (T', B, d) tensors), or per (sample, step) vector with
  ``loss.ortho_per_vector`` (dlf.models.dlf.losses.ortho_loss at width d).
- GD terms per unit, edges e (B, 6) from the model, prior p (6,) from the config, w = e + p per sample:
  ``reg`` = gd_reg sum_x (mean_b e_x - p_x)^2; ``logit`` = gd_logit sum_x mean_b(w_x |y_j - y_i|);
  homo ``repr`` = gd_repr sum_x mean_b(w_x sum_c |r_j - r_i|) (computed, out of the total by default);
  hetero ``repr`` = gd_repr sum_x mean_b(w_x) mean_b max(0, cos(r_j, r_i)) (a repulsion). The teacher i
  is detached in every distance, nothing else is.
Every term is always computed and logged; a zero weight keeps it out of the total.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

from dlf.models.dlf.losses import ortho_loss, triplet_loss, triplet_rows
from dlf.models.dmd.config import prior_logits
from dlf.models.dmd.model import ORDER
from dlf.models.dmd.units import PAIRS, prior

__all__ = ["loss_terms", "ortho_batch_axis", "distillation_terms"]


def ortho_batch_axis(s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """PyTorch 1.9's cosine_embedding_loss(target -1, margin 0) on the official (T', B, d) tensors, given
    batch-first (B, T', d): the cosine runs over the batch axis; the mean over the T' x d cells."""
    prod = (s * c).sum(0)
    denom = (((s * s).sum(0) + 1e-12) * ((c * c).sum(0) + 1e-12)).sqrt()
    return (prod / denom).clamp_min(0).mean()


def _min_cosine(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The official ``min_cosine``: torch's CosineEmbeddingLoss with target -1, margin 0 (batch mean)."""
    target = -torch.ones(student.shape[0], dtype=student.dtype, device=student.device)
    return F.cosine_embedding_loss(student, teacher, target)


def distillation_terms(edges: torch.Tensor, logits: torch.Tensor, reprs: torch.Tensor, p: torch.Tensor,
                       lc, hetero: bool) -> dict[str, torch.Tensor]:
    """reg, logit, repr of one GD unit: edges (B, 6), logits (3, B, 1), reprs (3, B, w), prior p (6,)."""
    reg = lc.gd_reg * (edges.mean(0) - p).pow(2).sum()
    logit, rep = edges.new_zeros(()), edges.new_zeros(())
    for x, (j, i) in enumerate(PAIRS):
        w = edges[:, x] + p[x]  # (B,)
        logit = logit + lc.gd_logit * (w * (logits[j] - logits[i].detach()).abs().sum(1)).mean()
        if hetero:
            rep = rep + lc.gd_repr * _min_cosine(reprs[j], reprs[i].detach()) * w.mean()
        else:
            rep = rep + lc.gd_repr * (w * (reprs[j] - reprs[i].detach()).abs().sum(1)).mean()
    return {"reg": reg, "logit": logit, "repr": rep}


def _weighted(pairs, zero: torch.Tensor) -> torch.Tensor:
    """sum of weight * term over the pairs whose weight is positive (a zero weight adds exactly nothing)."""
    return sum((w * t for w, t in pairs if w > 0), zero)


def _task_terms(out: Mapping[str, torch.Tensor], y: torch.Tensor, lc) -> dict[str, torch.Tensor]:
    """The L1 of each of the eight predictions, and their weighted sum ``task``."""
    terms = {"task_all": F.l1_loss(out["output_logit"].reshape(-1), y)}
    for kind in ("homo", "hetero"):
        for k in ORDER:
            terms[f"task_{k}_{kind}"] = F.l1_loss(out[f"logits_{k}_{kind}"].reshape(-1), y)
    terms["task_c"] = F.l1_loss(out["logits_c"].reshape(-1), y)
    weights = [(lc.task_all, terms["task_all"]), (lc.task_c, terms["task_c"])]
    weights += [(getattr(lc, f"task_{kind}"), terms[f"task_{k}_{kind}"]) for kind in ("homo", "hetero") for k in ORDER]
    terms["task"] = _weighted(weights, y.new_zeros(()))
    return terms


def _decoupling_terms(out: Mapping[str, torch.Tensor], y: torch.Tensor, lc) -> dict[str, torch.Tensor]:
    """recon_m, cycle_m, ortho_m per modality and their sums; the margin loss."""
    terms = {}
    for k in ORDER:
        s, c = out[f"s_{k}"], out[f"c_{k}"]  # (B, T', d)
        terms[f"recon_{k}"] = F.mse_loss(out[f"recon_{k}"], out[f"origin_{k}"])  # both (B, d, T')
        terms[f"cycle_{k}"] = F.mse_loss(out[f"s_{k}_r"], s.transpose(1, 2))
        terms[f"ortho_{k}"] = ortho_loss(s, c, s.shape[-1]) if lc.ortho_per_vector else ortho_batch_axis(s, c)
    for name in ("recon", "cycle", "ortho"):
        terms[name] = sum(terms[f"{name}_{k}"] for k in ORDER)
    terms["margin"] = triplet_loss(*triplet_rows({k: out[f"c_{k}_sim"] for k in ORDER}, y), "official", lc.margin_scale)
    return terms


def _gd_terms(out: Mapping[str, torch.Tensor], lc) -> dict[str, torch.Tensor]:
    """Each unit's reg, logit and repr terms, and its weighted loss ``homo_gd`` / ``hetero_gd``."""
    terms = {}
    for kind, hetero in (("homo", False), ("hetero", True)):
        logits = torch.stack([out[f"logits_{k}_{kind}"] for k in ORDER])  # (3, B, 1)
        reprs = torch.stack([out[f"repr_{k}_{kind}"] for k in ORDER])  # (3, B, w)
        edges = out[f"edges_{kind}"]
        p = prior(prior_logits(getattr(lc, f"{kind}_prior"), "loss", f"loss.{kind}_prior"), lc.prior_temperature, edges)
        gd = distillation_terms(edges, logits, reprs, p, lc, hetero)
        terms.update({f"{kind}_{n}": v for n, v in gd.items()})
        used = gd["logit"] + gd["reg"]
        terms[f"{kind}_gd"] = getattr(lc, f"gd_{kind}") * (used + gd["repr"] if hetero or lc.homo_repr_in_total else used)
    return terms


def loss_terms(out: Mapping[str, torch.Tensor], labels: torch.Tensor, cfg) -> dict[str, torch.Tensor]:
    """Every term of ``out`` (a DMD's outputs) against ``labels`` (B,), and ``total``."""
    lc = cfg.loss
    y = labels.reshape(-1).to(out["output_logit"].dtype)
    terms = {**_task_terms(out, y, lc), **_decoupling_terms(out, y, lc), **_gd_terms(out, lc)}
    parts = [(1.0, terms["task"]), (lc.recon, terms["recon"]), (lc.cycle, terms["cycle"]),
             (lc.margin, terms["margin"]), (lc.ortho, terms["ortho"])]
    parts += [(1.0, terms[f"{kind}_gd"]) for kind in ("homo", "hetero") if getattr(lc, f"gd_{kind}") > 0]  # weighted
    terms["total"] = _weighted(parts, y.new_zeros(()))
    return terms
