"""The DLF family (Disentangled-Language-Focused MSA): its config sections here, the model, its loss
terms and the official-checkpoint import in the modules beside (imported only when a model is built)."""
from dlf.models.dlf.config import PRESETS, LossConfig, ModelConfig, check
from dlf.models.registry import FamilySpec, register

SPEC = register(FamilySpec(name="dlf", model=ModelConfig, loss=LossConfig, implementation="dlf.models.dlf.family:FAMILY",
                           presets=PRESETS, label="DLF", check=check))
