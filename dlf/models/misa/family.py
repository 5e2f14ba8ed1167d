"""MISA as a model family: the heavy half of its registration (model, losses, MMSA checkpoint import)."""
from __future__ import annotations

import torch

from dlf.models.misa.losses import loss_terms
from dlf.models.misa.model import build_model, parameter_summary
from dlf.models.misa.official import convert_official_state
from dlf.models.registry import ModelFamily


def prediction(out):
    """M (B, 1) as (B,): what the metrics, selection and the tables read."""
    return out["M"].reshape(-1)


def features(model, out) -> dict:
    """``fused``: what MISA's fusion head reads, the transformer over the six codes (private then shared,
    t, v, a) flattened (B, 6H), recomputed from the codes in the outputs (deterministic in eval mode, where
    analyses run); ``shared_<m>`` and ``specific_<m>``: each modality's shared and private code (B, H)."""
    codes = [out[f"utt_private_{t}"] for t in "tva"] + [out[f"utt_shared_{t}"] for t in "tva"]
    h = model.transformer_encoder(torch.stack(codes, dim=1))
    names = {"l": "t", "a": "a", "v": "v"}
    return {"fused": h.reshape(h.shape[0], -1), **{f"shared_{m}": out[f"utt_shared_{t}"] for m, t in names.items()},
            **{f"specific_{m}": out[f"utt_private_{t}"] for m, t in names.items()}}


# param_groups None: MMSA's MISA trainer optimises every parameter, BERT included, in one Adam group at
# learning_rate without weight decay (the preset's train.weight_decay is 0)
FAMILY = ModelFamily(build=build_model, loss_terms=loss_terms, prediction=prediction, summary=parameter_summary,
                     convert_official=convert_official_state, features=features)
