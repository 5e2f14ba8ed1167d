"""LMF (Low-rank Multimodal Fusion, MMSA 2.2.1) as a model family: its config sections here, the model,
its loss and the MMSA checkpoint import in ``model.py`` (imported only when a model is built)."""
from dlf.models.lmf.config import PRESETS, LossConfig, ModelConfig, check
from dlf.models.registry import FamilySpec, register

SPEC = register(FamilySpec(name="lmf", model=ModelConfig, loss=LossConfig, implementation="dlf.models.lmf.model:FAMILY",
                           presets=PRESETS, label="LMF", check=check))
