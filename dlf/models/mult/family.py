"""MulT as a model family: the heavy half of its registration (model, loss, MMSA checkpoint import)."""
from __future__ import annotations

from dlf.models.mmsa_common import output_features
from dlf.models.mult.model import build_model, loss_terms, parameter_summary
from dlf.models.mult.official import convert_official_state
from dlf.models.registry import ModelFamily


def prediction(out):
    """M (B, 1) as (B,): what the metrics, selection and the tables read."""
    return out["M"].reshape(-1)


# param_groups None: MMSA's MULT optimises every parameter in one Adam group at train.lr
FAMILY = ModelFamily(build=build_model, loss_terms=loss_terms, prediction=prediction, summary=parameter_summary,
                     convert_official=convert_official_state,
                     # last_hs (MMSA's name), what proj1/proj2 and the output layer read; each modality's
                     # crossmodal-enhanced vector (its two crossmodal stacks, then its memory, last step)
                     features=output_features({"fused": "Feature_f", "enhanced_l": "Feature_t",
                                               "enhanced_a": "Feature_a", "enhanced_v": "Feature_v"}))
