"""MMSA's Graph_MFN ``state_dict`` (``Model.lstm_l.weight_ih``, ``Model.graph_mfn.t_network.0.weight``
...) as a dlf-ablate ``graph_mfn`` model.

The names are MMSA's once ``Model.`` is stripped; every size is read from the weights. MMSA's state_dict
lacks the four DFG node networks (not registered modules there). When the given state_dict carries them
under MMSA's attribute path (``Model.graph_mfn.networks.<node>.<0|1.0>.<weight|bias>``, node 0_1, 0_2,
1_2 or 0_1_2, as the parity fixture's unregistered_state.pt stores them) they are imported; otherwise
they start fresh, seeded, with a note.
"""
from __future__ import annotations

from dlf.models.graph_mfn.model import build_model
from dlf.models.mfn.official import CELL_WIDTHS, MEMORY_SIZES
from dlf.models.mmsa_common import PREFIX, convert_mmsa, sizes_reader

__all__ = ["convert_official_state", "NODE_PREFIX"]

NODE_PREFIX = "graph_mfn.networks."


_sizes = sizes_reader({**MEMORY_SIZES, "model.inner_node_dim": ("graph_mfn.t_network.1.0.weight", 0)},
                      CELL_WIDTHS)


def convert_official_state(state, corpus: str, pretrained: str | None = None, source: str = "state_dict",
                           dims=None, seq_lens=None):
    """An MMSA Graph_MFN state_dict (with or without the DFG node networks) -> a ``graph_mfn`` model
    (eval mode) under the ``corpus`` preset."""
    conv = convert_mmsa(state, corpus, "graph_mfn", "Graph_MFN", build_model, _sizes, source, dims, seq_lens,
                        optional=(NODE_PREFIX,))
    if not any(k.removeprefix(PREFIX).startswith(NODE_PREFIX) for k in state):
        conv.notes.append(
            f"the four DFG node networks ({PREFIX}{NODE_PREFIX}<0_1|0_2|1_2|0_1_2>.*, which MMSA does not save) are "
            f"not in the state_dict: they start fresh from torch.manual_seed({conv.config.seed}), built in MMSA's "
            f"order, i.e. the values MMSA's model built right after that seed holds for good (MMSA never trains "
            f"them); add them under those keys to import others")
    return conv
