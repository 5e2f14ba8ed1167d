"""MISA (MMSA 2.2.1 ``misa``) as a model family: its config sections here; the model, its losses and the
MMSA checkpoint import in the modules beside (imported only when a model is built)."""
from dlf.models.misa.config import PRESETS, LossConfig, ModelConfig, check
from dlf.models.registry import FamilySpec, register

SPEC = register(FamilySpec(name="misa", model=ModelConfig, loss=LossConfig, implementation="dlf.models.misa.family:FAMILY",
                           presets=PRESETS, label="MISA", check=check))
