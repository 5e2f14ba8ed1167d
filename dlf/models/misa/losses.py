"""MISA's training objective as MMSA 2.2.1's trainer computes it, on the outputs of one micro-batch:

    total = task * MSE(M, y) + diff * L_diff + sim * L_cmd + recon * L_recon

- L_diff (``diff``): the SUM over six pairs, (p_t, s_t), (p_v, s_v), (p_a, s_a), (p_a, p_t), (p_a, p_v),
  (p_t, p_v), of mean((X1^T X2)^2) (H x H), where each X has its batch mean per column removed and each
  row divided by its L2 norm (detached) + 1e-6: soft orthogonality.
- L_cmd (``similarity_cmd``): Central Moment Discrepancy of the shared codes, averaged over the pairs
  (s_t, s_v), (s_t, s_a), (s_a, s_v): |mu1 - mu2| + sum over k = 2..K of |E(x1 - mu1)^k - E(x2 - mu2)^k|,
  batch statistics, no range scaling.
- L_recon (``recon``): the mean over t, v, a of sum((recon_m - orig_m)^2) / numel; orig is not detached.

MMSA's domain (adversarial) loss is 0 with its use_cmd_sim: true, so it is not a term here. A zero
weight leaves its term out: not computed, not logged.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

__all__ = ["loss_terms", "diff_loss", "cmd", "recon_loss"]

DIFF_PAIRS = (("private_t", "shared_t"), ("private_v", "shared_v"), ("private_a", "shared_a"),
              ("private_a", "private_t"), ("private_a", "private_v"), ("private_t", "private_v"))
CMD_PAIRS = (("t", "v"), ("t", "a"), ("a", "v"))


def _diff_pair(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """MMSA's DiffLoss of two (B, H) codes: mean((X1^T X2)^2) of the centred, row-normalised codes."""
    x1, x2 = x1 - x1.mean(dim=0, keepdim=True), x2 - x2.mean(dim=0, keepdim=True)
    x1 = x1 / (x1.norm(p=2, dim=1, keepdim=True).detach() + 1e-6)
    x2 = x2 / (x2.norm(p=2, dim=1, keepdim=True).detach() + 1e-6)
    return (x1.t() @ x2).pow(2).mean()


def diff_loss(out: Mapping[str, torch.Tensor]) -> torch.Tensor:
    total = _diff_pair(out["utt_" + DIFF_PAIRS[0][0]], out["utt_" + DIFF_PAIRS[0][1]])
    for a, b in DIFF_PAIRS[1:]:
        total = total + _diff_pair(out["utt_" + a], out["utt_" + b])
    return total


def _match(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).pow(2).sum() ** 0.5  # as MMSA writes it (its gradient is undefined at equality, too)


def cmd(x1: torch.Tensor, x2: torch.Tensor, moments: int) -> torch.Tensor:
    """Central Moment Discrepancy of two (B, H) samples up to order ``moments``."""
    mu1, mu2 = x1.mean(dim=0), x2.mean(dim=0)
    c1, c2 = x1 - mu1, x2 - mu2
    total = _match(mu1, mu2)
    for k in range(2, moments + 1):
        total = total + _match(c1.pow(k).mean(dim=0), c2.pow(k).mean(dim=0))
    return total


def recon_loss(out: Mapping[str, torch.Tensor]) -> torch.Tensor:
    total = 0.0
    for t in "tva":
        diffs = out[f"utt_{t}_orig"] - out[f"utt_{t}_recon"]
        total = total + diffs.pow(2).sum() / diffs.numel()
    return total / 3.0


def loss_terms(out: Mapping[str, torch.Tensor], labels: torch.Tensor, cfg: Any) -> dict[str, torch.Tensor]:
    """{"total", "task_mse", "diff", "similarity_cmd", "recon"} (names of MMSA's fixture), each term
    unweighted; "total" is the weighted sum the trainer back-propagates."""
    w = cfg.loss
    terms: dict[str, torch.Tensor] = {}
    if w.task:
        terms["task_mse"] = F.mse_loss(out["M"].reshape(-1), labels.reshape(-1).to(out["M"].dtype))
    if w.diff:
        terms["diff"] = diff_loss(out)
    if w.sim:
        shared = {t: out[f"utt_shared_{t}"] for t in "tva"}
        pairs = [cmd(shared[a], shared[b], cfg.model.cmd_moments) for a, b in CMD_PAIRS]
        terms["similarity_cmd"] = (pairs[0] + pairs[1] + pairs[2]) / 3.0
    if w.recon:
        terms["recon"] = recon_loss(out)
    weights = {"task_mse": w.task, "diff": w.diff, "similarity_cmd": w.sim, "recon": w.recon}
    total = sum((weights[name] * value for name, value in terms.items()), torch.zeros((), device=out["M"].device))
    return {"total": total, **terms}
