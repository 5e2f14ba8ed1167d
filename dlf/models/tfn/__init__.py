"""TFN (Tensor Fusion Network, MMSA 2.2.1) as a model family: its config sections here, the model, its
loss and the MMSA checkpoint import in ``model.py`` (imported only when a model is built)."""
from dlf.models.registry import FamilySpec, register
from dlf.models.tfn.config import PRESETS, LossConfig, ModelConfig, check

SPEC = register(FamilySpec(name="tfn", model=ModelConfig, loss=LossConfig, implementation="dlf.models.tfn.model:FAMILY",
                           presets=PRESETS, label="TFN", check=check))
