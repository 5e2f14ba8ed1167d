"""MMSA's Graph_MFN ``state_dict`` (``Model.lstm_l.weight_ih``, ``Model.graph_mfn.t_network.0.weight``
...) as a dlf-ablate ``graph_mfn`` model.

The names are MMSA's once ``Model.`` is stripped; every size is read from the weights. MMSA's state_dict
lacks the four DFG node networks (not registered modules there). When the given state_dict carries them
under MMSA's attribute path (``Model.graph_mfn.networks.<node>.<0|1.0>.<weight|bias>``, node 0_1, 0_2,
1_2 or 0_1_2, as the parity fixture's unregistered_state.pt stores them) they are imported; otherwise
they start fresh, seeded, with a note.
"""
from __future__ import annotations

from typing import Mapping

import torch

from dlf.config import preset
from dlf.models.graph_mfn.model import build_model
from dlf.models.mfn.mmsa_state import PREFIX, build_and_load, check_names, rows, strip_prefix
from dlf.models.mfn.official import ALIGNED_LENS, input_dims, memory_sizes, names

__all__ = ["convert_official_state", "NODE_PREFIX"]

NODE_PREFIX = "graph_mfn.networks."


def convert_official_state(state: Mapping[str, torch.Tensor], corpus: str, pretrained: str | None = None,
                           source: str = "state_dict", dims=None, seq_lens=None):
    """An MMSA Graph_MFN state_dict (with or without the DFG node networks) -> a ``graph_mfn`` model
    (eval mode) under the ``corpus`` preset."""
    state = strip_prefix(state)
    lens = dict(seq_lens or ALIGNED_LENS)
    known = names("graph_mfn", build_model, corpus, dims or {"l": 768, "a": 5, "v": 20}, lens)
    nodes = {k for k in known if k.startswith(NODE_PREFIX)}
    given = bool(nodes & set(state))
    check_names(state, known if given else known - nodes, source, "Graph_MFN")
    sizes = memory_sizes(state) | {"model.inner_node_dim": rows(state, "graph_mfn.t_network.1.0.weight")}
    conv = build_and_load(state, corpus, "graph_mfn", "Graph_MFN", build_model, sizes, input_dims(state), lens,
                          source, keep=() if given else nodes)
    if not given:
        seed = conv.config.seed
        conv.notes.append(
            f"the four DFG node networks ({PREFIX}{NODE_PREFIX}<0_1|0_2|1_2|0_1_2>.*, which MMSA does not save) are "
            f"not in the state_dict: they start fresh from torch.manual_seed({seed}), built in MMSA's order, i.e. "
            f"the values MMSA's model built right after that seed holds for good (MMSA never trains them); "
            f"add them under those keys to import others")
    return conv
