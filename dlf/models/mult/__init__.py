"""MulT (Multimodal Transformer, MMSA 2.2.1 ``mult``): its config sections here; the model, its loss
and the MMSA checkpoint import in the modules beside (imported only when a model is built)."""
from dlf.models.mult.config import PRESETS, LossConfig, ModelConfig, check
from dlf.models.registry import FamilySpec, register

SPEC = register(FamilySpec(name="mult", model=ModelConfig, loss=LossConfig, implementation="dlf.models.mult.family:FAMILY",
                           presets=PRESETS, label="MulT", check=check))
