"""The Dynamic Fusion Graph (Zadeh et al., ACL 2018) for three modalities, as MMSA 2.2.1 builds it.

Vertices: the singletons s_l, s_a, s_v; the bimodal nodes n01, n02, n12; the trimodal node n012; and
the top vertex tau. An efficacy network e = efficacy_model([s_l ; s_a ; s_v]) gives 19 raw weights (no
softmax, no sigmoid), one per edge, and every node network reads the concatenation of its inputs, each
multiplied by its efficacy (index in brackets):

    n01  = node([s_l e0, s_a e1])          n02 = node([s_l e2, s_v e3])        n12 = node([s_a e4, s_v e5])
    n012 = node([s_l e6, s_a e7, s_v e8, n01 e9, n02 e10, n12 e11])
    tau  = t_network([s_l e12, s_a e13, s_v e14, n01 e15, n02 e16, n12 e17, n012 e18])

Every node network is Linear(in -> 100) then Linear(100 -> k), and the efficacy network Linear(sum h ->
100), Linear(100 -> k), Linear(k -> 19), all without activations. The second Linear of the node networks
and of t_network are deep copies of one "pattern" layer (same initial weights).

MMSA's quirk: it keeps the four node networks in a plain dict, so they are not submodules: no
parameters, never optimised, absent from MMSA's state_dict. Here, by default, their weights are buffers
(:class:`FrozenLinear`): saved with the model, moved by ``.to()``, never trained or counted. Names are
MMSA's (``networks.0_1.0.weight``, ``t_network.1.0.bias``, ``efficacy_model.2.weight`` ...).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DynamicFusionGraph", "FrozenLinear", "NODES", "HIDDEN"]

NODES = ("0_1", "0_2", "1_2", "0_1_2")  # the node networks, named by their modalities (0 l, 1 a, 2 v)
HIDDEN = 100  # MMSA hard-codes the first Linear of every DFG network to 100 outputs
EFFICACIES = 19  # 2 + 2 + 2 (bimodal) + 6 (trimodal) + 7 (tau)


class FrozenLinear(nn.Module):
    """A Linear whose weight and bias are buffers, not parameters: in the state_dict and moved by
    ``.to()``, but never optimised, counted or given a gradient (MMSA's unregistered node networks)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.register_buffer("weight", linear.weight.detach().clone())
        self.register_buffer("bias", linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


def _frozen(module: nn.Module) -> nn.Module:
    """``module`` with every Linear inside replaced by a :class:`FrozenLinear` of the same values."""
    if isinstance(module, nn.Linear):
        return FrozenLinear(module)
    for name, child in module.named_children():
        setattr(module, name, _frozen(child))
    return module


class DynamicFusionGraph(nn.Module):
    def __init__(self, widths: tuple[int, int, int], k: int, frozen_nodes: bool = True, shared_pattern: bool = True):
        """``widths``: the singleton widths (h_l, h_a, h_v); ``k``: the width of every node and of tau.
        The layers are created in MMSA's order, so one seed gives MMSA's initial values."""
        super().__init__()
        h_l, h_a, h_v = widths
        pattern = nn.Sequential(nn.Linear(HIDDEN, k))
        efficacy_core = nn.Sequential(nn.Linear(HIDDEN, k))

        def network(n_in: int) -> nn.Sequential:
            second = copy.deepcopy(pattern) if shared_pattern else nn.Sequential(nn.Linear(HIDDEN, k))
            return nn.Sequential(nn.Linear(n_in, HIDDEN), second)

        inputs = {"0_1": h_l + h_a, "0_2": h_l + h_v, "1_2": h_a + h_v, "0_1_2": h_l + h_a + h_v + 3 * k}
        nodes = {name: network(inputs[name]) for name in NODES}
        self.networks = nn.ModuleDict({name: _frozen(net) if frozen_nodes else net for name, net in nodes.items()})
        self.t_network = network(h_l + h_a + h_v + 4 * k)
        self.efficacy_model = nn.Sequential(nn.Linear(h_l + h_a + h_v, HIDDEN), efficacy_core,
                                            nn.Linear(k, EFFICACIES))

    def forward(self, s_l: torch.Tensor, s_a: torch.Tensor, s_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Singletons (B, h_m) -> (tau (B, k), efficacies (B, 19))."""
        e = self.efficacy_model(torch.cat([s_l, s_a, s_v], dim=1))  # (B, 19), raw

        def weighted(i: int, *xs: torch.Tensor) -> torch.Tensor:  # [x_0 e_i ; x_1 e_(i+1) ; ...]
            return torch.cat([x * e[:, i + j:i + j + 1] for j, x in enumerate(xs)], dim=1)

        n01 = self.networks["0_1"](weighted(0, s_l, s_a))  # (B, k)
        n02 = self.networks["0_2"](weighted(2, s_l, s_v))
        n12 = self.networks["1_2"](weighted(4, s_a, s_v))
        n012 = self.networks["0_1_2"](weighted(6, s_l, s_a, s_v, n01, n02, n12))
        tau = self.t_network(weighted(12, s_l, s_a, s_v, n01, n02, n12, n012))  # (B, k)
        return tau, e
