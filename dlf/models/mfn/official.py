"""MMSA's MFN ``state_dict`` (``Model.lstm_l.weight_ih`` ...) as a dlf-ablate ``mfn`` model.

The names are MMSA's once ``Model.`` is stripped. Every size is read from the weights (the LSTMCell
widths, the memory and each hidden layer); the feature widths too, which the converter's caller checks
against the dataset. The lengths are not fixed by the weights: the dataset's are kept.
"""
from __future__ import annotations

from dlf.models.mfn.model import build_model
from dlf.models.mmsa_common import convert_mmsa, sizes_reader

__all__ = ["convert_official_state", "MEMORY_SIZES", "CELL_WIDTHS"]

# model.* size -> (key, axis) of the weight that fixes it, for what MFN and Graph-MFN share
# (an LSTMCell's weight_hh is (4 h, h))
MEMORY_SIZES = {
    "model.text_hidden": ("lstm_l.weight_hh", 1),
    "model.audio_hidden": ("lstm_a.weight_hh", 1),
    "model.video_hidden": ("lstm_v.weight_hh", 1),
    "model.mem_size": ("att2_fc2.weight", 0),
    "model.att2_hidden": ("att2_fc1.weight", 0),
    "model.gamma1_hidden": ("gamma1_fc1.weight", 0),
    "model.gamma2_hidden": ("gamma2_fc1.weight", 0),
    "model.out_hidden": ("out_fc1.weight", 0),
}
CELL_WIDTHS = {m: (f"lstm_{m}.weight_ih", 1) for m in ("l", "a", "v")}  # the feature widths the cells read


_sizes = sizes_reader({**MEMORY_SIZES, "model.att1_hidden": ("att1_fc1.weight", 0)}, CELL_WIDTHS)


def convert_official_state(state, corpus: str, pretrained: str | None = None, source: str = "state_dict",
                           dims=None, seq_lens=None):
    """An MMSA MFN state_dict -> an ``mfn`` model (eval mode) under the ``corpus`` preset."""
    return convert_mmsa(state, corpus, "mfn", "MFN", build_model, _sizes, source, dims, seq_lens)
