"""MAG-BERT as a model family: the heavy half of its registration (model, loss, MMSA checkpoint import)."""
from __future__ import annotations

from dlf.models.mag_bert.model import build_model, parameter_summary
from dlf.models.mag_bert.official import convert_official_state
from dlf.models.mmsa_common import l1_loss_terms
from dlf.models.registry import ModelFamily


def prediction(out):
    """M (B, 1) as (B,): what the metrics, selection and the tables read."""
    return out["M"].reshape(-1)


# param_groups None: MMSA's BERT_MAG trainer optimises every parameter, BERT included, in one Adam group
FAMILY = ModelFamily(build=build_model, loss_terms=l1_loss_terms, prediction=prediction, summary=parameter_summary,
                     convert_official=convert_official_state)
