"""MMSA's MFN ``state_dict`` (``Model.lstm_l.weight_ih`` ...) as a dlf-ablate ``mfn`` model.

The names are MMSA's once ``Model.`` is stripped. Every size is read from the weights (the LSTMCell
widths, the memory and each hidden layer); the feature widths too, which the converter's caller checks
against the dataset. The lengths are not fixed by the weights: the dataset's are kept.
"""
from __future__ import annotations

from typing import Mapping

import torch

from dlf.config import preset
from dlf.models.mfn.mmsa_state import build_and_load, check_names, rows, strip_prefix
from dlf.models.mfn.model import build_model

__all__ = ["convert_official_state", "ALIGNED_LENS"]

ALIGNED_LENS = {"l": 50, "a": 50, "v": 50}  # MMSA's aligned_50 files, when no dataset is given


def input_dims(state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """The feature widths the three LSTMCells read (MMSA feature_dims)."""
    return {m: int(state[f"lstm_{m}.weight_ih"].shape[1]) for m in ("l", "a", "v")}


def memory_sizes(state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """The sizes MFN and Graph-MFN share, read from the weight shapes."""
    return {"model.text_hidden": rows(state, "lstm_l.weight_hh") // 4,
            "model.audio_hidden": rows(state, "lstm_a.weight_hh") // 4,
            "model.video_hidden": rows(state, "lstm_v.weight_hh") // 4,
            "model.mem_size": rows(state, "att2_fc2.weight"), "model.att2_hidden": rows(state, "att2_fc1.weight"),
            "model.gamma1_hidden": rows(state, "gamma1_fc1.weight"),
            "model.gamma2_hidden": rows(state, "gamma2_fc1.weight"), "model.out_hidden": rows(state, "out_fc1.weight")}


def names(family: str, build, corpus: str, dims: Mapping[str, int], lens: Mapping[str, int]) -> set[str]:
    """The state_dict keys of a ``family`` model (built on the meta device: names only, no memory)."""
    with torch.device("meta"):
        return set(build(preset(corpus, family), dims, lens).state_dict())


def convert_official_state(state: Mapping[str, torch.Tensor], corpus: str, pretrained: str | None = None,
                           source: str = "state_dict", dims=None, seq_lens=None):
    """An MMSA MFN state_dict -> an ``mfn`` model (eval mode) under the ``corpus`` preset."""
    state = strip_prefix(state)
    lens = dict(seq_lens or ALIGNED_LENS)
    check_names(state, names("mfn", build_model, corpus, dims or {"l": 768, "a": 5, "v": 20}, lens), source, "MFN")
    sizes = memory_sizes(state) | {"model.att1_hidden": rows(state, "att1_fc1.weight")}
    return build_and_load(state, corpus, "mfn", "MFN", build_model, sizes, input_dims(state), lens, source)
