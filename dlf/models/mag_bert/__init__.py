"""MAG-BERT (MMSA 2.2.1 ``bert_mag``, Rahman et al. 2020): its config sections here; the model, its loss
and the MMSA checkpoint import in the modules beside (imported only when a model is built)."""
from dlf.models.mag_bert.config import PRESETS, LossConfig, ModelConfig, check
from dlf.models.registry import FamilySpec, register

SPEC = register(FamilySpec(name="mag_bert", model=ModelConfig, loss=LossConfig,
                           implementation="dlf.models.mag_bert.family:FAMILY", presets=PRESETS, label="MAG-BERT",
                           check=check))
