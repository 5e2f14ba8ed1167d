"""DLF as a model family: the heavy half of its registration (model, loss terms, official import)."""
from __future__ import annotations

from dlf.models.dlf.losses import loss_terms
from dlf.models.dlf.model import DLFOutput, build_model, parameter_summary
from dlf.models.dlf.official import convert_official_state
from dlf.models.registry import ModelFamily


def prediction(out: DLFOutput):
    """The final head's prediction (B,): what the metrics, selection and the tables read."""
    return out.pred


def features(model, out: DLFOutput) -> dict:
    """``fused`` (the final head's input), ``shared``, ``specific_<m>`` and ``enhanced_<m>`` (DLFOutput.features)."""
    return dict(out.features)


FAMILY = ModelFamily(build=build_model, loss_terms=loss_terms, prediction=prediction, summary=parameter_summary,
                     convert_official=convert_official_state, features=features)
