"""MFN (Memory Fusion Network, MMSA 2.2.1) as a model family: its config sections here, the model, its
loss and the MMSA checkpoint import in ``family.py`` (imported only when a model is built)."""
from dlf.models.mfn.config import PRESETS, LossConfig, ModelConfig, check
from dlf.models.registry import FamilySpec, register

SPEC = register(FamilySpec(name="mfn", model=ModelConfig, loss=LossConfig, implementation="dlf.models.mfn.family:FAMILY",
                           presets=PRESETS, label="MFN", check=check))
