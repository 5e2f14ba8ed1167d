"""LF_DNN, MMSA 2.2.1's late-fusion DNN baseline: its config sections here, the model, its loss terms
and the MMSA checkpoint import in ``model`` (imported only when a model is built)."""
from dlf.models.lf_dnn.config import PRESETS, LossConfig, ModelConfig, check
from dlf.models.registry import FamilySpec, register

SPEC = register(FamilySpec(name="lf_dnn", model=ModelConfig, loss=LossConfig,
                           implementation="dlf.models.lf_dnn.model:FAMILY", presets=PRESETS, label="LF-DNN",
                           check=check))
