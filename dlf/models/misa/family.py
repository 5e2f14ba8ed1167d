"""MISA as a model family: the heavy half of its registration (model, losses, MMSA checkpoint import)."""
from __future__ import annotations

from dlf.models.misa.losses import loss_terms
from dlf.models.misa.model import build_model, parameter_summary
from dlf.models.misa.official import convert_official_state
from dlf.models.registry import ModelFamily


def prediction(out):
    """M (B, 1) as (B,): what the metrics, selection and the tables read."""
    return out["M"].reshape(-1)


# param_groups None: MMSA's MISA trainer optimises every parameter, BERT included, in one Adam group at
# learning_rate without weight decay (the preset's train.weight_decay is 0)
FAMILY = ModelFamily(build=build_model, loss_terms=loss_terms, prediction=prediction, summary=parameter_summary,
                     convert_official=convert_official_state)
