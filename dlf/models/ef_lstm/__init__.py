"""EF_LSTM, MMSA 2.2.1's early-fusion LSTM baseline: its config sections here, the model, its loss
terms and the MMSA checkpoint import in ``model`` (imported only when a model is built)."""
from dlf.models.ef_lstm.config import PRESETS, LossConfig, ModelConfig, check
from dlf.models.registry import FamilySpec, register

SPEC = register(FamilySpec(name="ef_lstm", model=ModelConfig, loss=LossConfig,
                           implementation="dlf.models.ef_lstm.model:FAMILY", presets=PRESETS, label="EF-LSTM",
                           check=check))
