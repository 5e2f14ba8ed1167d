"""DMD as a model family: the heavy half of its registration (model, losses, official checkpoint import)."""
from __future__ import annotations

from dlf.models.dmd.losses import loss_terms
from dlf.models.dmd.model import build_model, parameter_summary
from dlf.models.dmd.official import UNITS, convert_official_state
from dlf.models.registry import ModelFamily


def prediction(out):
    """output_logit (B, 1) as (B,): what the metrics, selection and the tables read."""
    return out["output_logit"].reshape(-1)


def features(model, out) -> dict:
    """fused: the 9d gated fusion the final head reads; shared: the shared branch's c_fusion (3d);
    specific_<m>: the exclusive (cross-modal memory) branch's last step per modality (2d)."""
    return {"fused": out["fused"], "shared": out["c_fusion"], **{f"specific_{k}": out[f"last_h_{k}"] for k in "lva"}}


# param_groups None: the official trainer's one Adam over the model (BERT included) and both GD units,
# at learning_rate without weight decay; the dead projections are in it and never get a gradient
FAMILY = ModelFamily(build=build_model, loss_terms=loss_terms, prediction=prediction, summary=parameter_summary,
                     convert_official=convert_official_state, official_units=UNITS,
                     features=features)
