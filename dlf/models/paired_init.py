"""Paired initialisation: a module's initial values depend only on the run seed and its name.

Built the usual way, a model's initial weights come from one random stream consumed in construction
order, so switching one part off (``w/o L_m`` drops the triplet projections) shifts the values of
every module built after it: two variants with the same seed then differ by their initialisation as
well as by the ablation, and the paired difference between them carries that noise. Re-drawing each
module from its own generator, seeded by (run seed, qualified module name), gives every module two
variants (or two families) share the same starting values, whatever else is built.

The distribution is unchanged because each module re-draws itself with its own ``reset_parameters``:
torch's layers (Linear, Conv1d, LayerNorm, LSTM, BatchNorm, ...) have theirs, and a module whose
family initialises it otherwise defines ``reset_parameters`` to apply that scheme to its own
parameters and children (``dlf.models.layers.MultiheadAttention``: Xavier and zero biases). Modules
are visited children first, so a parent's scheme is the last word on its children, as in
construction. Modules of a pretrained model (``transformers``) keep their loaded weights; a
parameter no ``reset_parameters`` reaches keeps its constructed value (TFN's constant output range).
"""
from __future__ import annotations

import hashlib

import torch
from torch import nn

__all__ = ["module_seed", "paired_init"]


def module_seed(seed: int, name: str) -> int:
    """A stable 63-bit seed for module ``name`` of a run seeded ``seed`` (same on every platform)."""
    digest = hashlib.blake2b(f"{int(seed)}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _pretrained(module: nn.Module) -> bool:
    return type(module).__module__.split(".", 1)[0] == "transformers"


def paired_init(model: nn.Module, seed: int) -> nn.Module:
    """Re-draw every module's parameters from a generator seeded by (``seed``, its qualified name).

    Only the CPU default generator is reseeded, inside ``fork_rng``: the global random state after the
    call is the one before it. Buffers a reset restores (BatchNorm's running statistics) start fresh.
    """
    modules = list(model.named_modules())
    frozen = tuple(f"{name}." for name, m in modules if _pretrained(m))
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        for name, module in reversed(modules):  # every descendant before its ancestor
            reset = getattr(module, "reset_parameters", None) or getattr(module, "_reset_parameters", None)
            if reset is None or _pretrained(module) or f"{name}.".startswith(frozen):
                continue
            torch.default_generator.manual_seed(module_seed(seed, name))
            reset()
    return model
