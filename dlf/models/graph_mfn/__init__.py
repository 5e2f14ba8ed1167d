"""Graph-MFN (MFN with the Dynamic Fusion Graph, MMSA 2.2.1) as a model family: its config sections here,
the model, its loss and the MMSA checkpoint import in ``family.py`` (imported only when a model is built)."""
from dlf.models.graph_mfn.config import PRESETS, LossConfig, ModelConfig, check
from dlf.models.registry import FamilySpec, register

SPEC = register(FamilySpec(name="graph_mfn", model=ModelConfig, loss=LossConfig,
                           implementation="dlf.models.graph_mfn.family:FAMILY", presets=PRESETS, label="Graph-MFN",
                           check=check))
