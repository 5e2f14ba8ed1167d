"""DMD's graph-distillation unit (the official ``DistillationKernel``), two of which live in a DMD model:
``gd_homo`` over the homogeneous heads (logits and d-wide representations) and ``gd_hetero`` over the
heterogeneous ones (2d-wide). The official code builds them beside the model and trains them with the
same optimizer; here they are submodules, so checkpoints and the optimizer hold them the same way.

Forward, per sample: z_m = [W_logit(logit_m); W_repr(repr_m)] (2g) for m in (l, v, a); for the six
ordered pairs (student j, teacher i) in :data:`PAIRS` an edge logit W_edge([z_j; z_i]); the edge weights
are ONE softmax over all six edges of the sample at temperature ``temperature`` (official 1/8). Nothing
is detached: both modalities of a pair feed the edge network.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GraphDistillation", "PAIRS", "prior"]

# (student j, teacher i) over the stacking order (0 l, 1 v, 2 a); official loop order, = config.EDGES
PAIRS = ((0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1))


class GraphDistillation(nn.Module):
    """Edge network of one GD unit; parameter names are the official ones (W_logit, W_repr, W_edge)."""

    def __init__(self, width: int, gd_size: int, temperature: float, n_classes: int = 1):
        super().__init__()
        self.W_logit = nn.Linear(n_classes, gd_size)
        self.W_repr = nn.Linear(width, gd_size)
        self.W_edge = nn.Linear(4 * gd_size, 1)
        self.temperature = temperature

    def forward(self, logits: torch.Tensor, reprs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """logits (3, B, 1), reprs (3, B, width) -> (edge weights (B, 6), edge logits (B, 6))."""
        z = torch.cat([self.W_logit(logits), self.W_repr(reprs)], dim=-1)  # (3, B, 2g)
        raw = torch.cat([self.W_edge(torch.cat([z[j], z[i]], dim=-1)) for j, i in PAIRS], dim=1)  # (B, 6)
        return F.softmax(raw * self.temperature, dim=1), raw


def prior(logits: list[float], temperature: float, like: torch.Tensor) -> torch.Tensor:
    """The official hand-set prior softmax(v / temperature), computed in float64 as the official numpy
    helper does and then stored as float32 (6,)."""
    v = torch.tensor(logits, dtype=torch.float64) / temperature
    return torch.softmax(v, dim=0).to(device=like.device, dtype=like.dtype)
