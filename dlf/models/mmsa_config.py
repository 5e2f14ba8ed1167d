"""Config pieces the MMSA baseline families share (torch-free): MMSA's common training recipe as
preset overrides, and the checks of the subnet-based models (LF_DNN, TFN, LMF).

MMSA's trainers (../shared/reference/baselines/README.md section 3): Adam, no gradient accumulation
or clipping, no scheduler, selection on the valid L1 rounded to 4 decimals, a checkpoint when it drops
by at least 1e-6, early stop after 8 epochs without one, and no epoch cap (1000 stands for none).
"""
from __future__ import annotations

from typing import Any

from dlf.errors import DLFError

__all__ = ["MMSA_RECIPE", "check_subnet_model", "require_sequential"]

MMSA_RECIPE: dict[str, Any] = {
    "train.accumulation": 1, "train.clip_value": 0.0, "train.scheduler": "none", "train.val_loss": "mae",
    "train.val_decimals": 4, "train.patience": 8, "train.max_epochs": 1000, "train.min_delta": 1e-6,
}


def check_subnet_model(cfg: Any, source: str, family: str, sizes: tuple[str, ...], dropouts: tuple[str, ...]) -> None:
    """All three modalities, sizes >= 1, dropouts in [0, 1) and loss.task >= 0. (Only model.* and loss.*:
    variant files are validated on top of another family's train section, see ``require_sequential``.)"""
    m = cfg.model
    if tuple(m.modalities) != ("l", "a", "v"):
        raise DLFError(f"{source}: model.modalities={list(m.modalities)}: {family} fuses all three modalities "
                       f"(l, a, v); set model.modalities=[l,a,v]")
    for name in sizes:
        if getattr(m, name) < 1:
            raise DLFError(f"{source}: model.{name} must be >= 1, got {getattr(m, name)}")
    for name in dropouts:
        if not 0.0 <= getattr(m, name) < 1.0:
            raise DLFError(f"{source}: model.{name} must be in [0, 1), got {getattr(m, name)}")
    if cfg.loss.task < 0:
        raise DLFError(f"{source}: loss.task must be >= 0, got {cfg.loss.task}")


def require_sequential(cfg: Any, family: str) -> None:
    """Refuse gradient accumulation for a model with BatchNorm: the trainer may compute the micro-batches
    of one accumulation window concurrently (in forked processes on Linux), and the running-statistics
    updates of BatchNorm in training mode would then be lost. MMSA never accumulates for these models.
    Called when training starts (from the family's ``param_groups``), on the run's final config."""
    if cfg.train.accumulation != 1:
        raise DLFError(f"train.accumulation={cfg.train.accumulation}: {family} needs 1 (its BatchNorm running "
                       f"statistics must be updated batch by batch; MMSA does not accumulate); "
                       f"use --set train.accumulation=1")
