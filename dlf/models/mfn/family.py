"""MFN as a model family: the heavy half of its registration (model, loss terms, MMSA import)."""
from __future__ import annotations

from dlf.models.mfn.model import build_model
from dlf.models.mfn.official import convert_official_state
from dlf.models.mmsa_common import l1_loss_terms, parameter_summary
from dlf.models.registry import ModelFamily


def prediction(out: dict):
    """M (B, 1) as (B,): what the metrics, selection and the tables read."""
    return out["M"].reshape(-1)


FAMILY = ModelFamily(build=build_model, loss_terms=l1_loss_terms, prediction=prediction, summary=parameter_summary,
                     convert_official=convert_official_state)
