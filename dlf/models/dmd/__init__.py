"""DMD (Decoupled Multimodal Distilling, Li et al. CVPR 2023; the authors' code mdswyz/DMD) as a model
family: its config sections here; the model, its graph-distillation units, its losses and the official
checkpoint import in the modules beside (imported only when a model is built)."""
from dlf.models.dmd.config import PRESETS, LossConfig, ModelConfig, check
from dlf.models.registry import FamilySpec, register

SPEC = register(FamilySpec(name="dmd", model=ModelConfig, loss=LossConfig, implementation="dlf.models.dmd.family:FAMILY",
                           presets=PRESETS, label="DMD", check=check))
