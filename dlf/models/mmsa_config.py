"""What the config sections of the MMSA 2.2.1 baselines share (torch-free: planning reads it): MMSA's
training recipe as preset overrides, and the checks every such family runs from its ``FamilySpec.check``.

MMSA's trainers (../shared/reference/baselines/README.md sections 3 and 5): Adam with torch's coupled
L2 weight decay, no gradient accumulation or clipping, no scheduler, selection on the valid L1 rounded
to 4 decimals, a new best when it drops by at least 1e-6, early stop after 8 epochs without one and
no epoch cap (1000 stands for none: patience ends a run long before). The model is built right
after the seed, in MMSA's order, without paired initialisation (``train.paired_init: false``).

A family's check sees every config built for it (``dlf.config.validate``): the catalogue, studies,
``--set`` and tuning trials all build a variant on the preset of the family it names, so a value the
family cannot run is refused in one line when the run is planned, not when it starts.
"""
from __future__ import annotations

from typing import Any

from dlf.errors import DLFError

__all__ = ["MMSA_RECIPE", "mmsa_recipe", "check_mmsa_fields", "require_all_modalities", "require_sequential"]

MMSA_RECIPE: dict[str, Any] = {
    "train.accumulation": 1, "train.clip_value": 0.0, "train.scheduler": "none", "train.val_loss": "mae",
    "train.val_decimals": 4, "train.patience": 8, "train.max_epochs": 1000, "train.min_delta": 1e-6,
    # MMSA seeds, then builds: a seed gives MMSA's initial weights only in construction order (tested
    # for MFN and Graph-MFN), so the baselines' recipe leaves paired initialisation off
    "train.paired_init": False,
}


def mmsa_recipe(batch_size: int, lr: float, weight_decay: float, aligned: bool) -> dict[str, Any]:
    """A corpus preset's ``train.*`` / ``data.*`` part: MMSA's shared recipe plus the model's own
    batch size, learning rate and weight decay (README section 5) and which MMSA file it reads."""
    return {**MMSA_RECIPE, "train.batch_size": batch_size, "train.lr": lr, "train.weight_decay": weight_decay,
            "data.aligned": aligned}


def check_mmsa_fields(cfg: Any, source: str, sizes: tuple[str, ...], dropouts: tuple[str, ...]) -> None:
    """Sizes (``model.<name>``) >= 1, dropouts in [0, 1), loss.task >= 0."""
    m = cfg.model
    for name in sizes:
        if getattr(m, name) < 1:
            raise DLFError(f"{source}: model.{name} must be >= 1, got {getattr(m, name)}")
    for name in dropouts:
        if not 0.0 <= getattr(m, name) < 1.0:
            raise DLFError(f"{source}: model.{name} must be in [0, 1), got {getattr(m, name)}")
    if cfg.loss.task < 0:
        raise DLFError(f"{source}: loss.task must be >= 0, got {cfg.loss.task}")


def require_all_modalities(cfg: Any, source: str, family: str) -> None:
    """MMSA fuses all three modalities; a family whose fusion would change meaning without one (a
    product over the modalities, say) refuses a subset rather than invent a variant of it."""
    if tuple(cfg.model.modalities) != ("l", "a", "v"):
        raise DLFError(f"{source}: model.modalities={list(cfg.model.modalities)}: {family} fuses all three "
                       f"modalities (l, a, v); set model.modalities=[l,a,v]")


def require_sequential(cfg: Any, source: str, family: str) -> None:
    """Refuse gradient accumulation for a model with BatchNorm: the trainer may compute the micro-batches
    of one window concurrently (threads or forked processes), where BatchNorm's running statistics
    would not be updated batch after batch. MMSA never accumulates for these models."""
    if cfg.train.accumulation != 1:
        raise DLFError(f"{source}: train.accumulation={cfg.train.accumulation}: {family} needs 1 (its BatchNorm "
                       f"running statistics are updated batch by batch; MMSA does not accumulate); "
                       f"use --set train.accumulation=1")
