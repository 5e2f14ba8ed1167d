"""DMD's config sections (Decoupled Multimodal Distilling, Li et al., CVPR 2023; the authors' code
mdswyz/DMD): what ``model.*`` and ``loss.*`` mean for the ``dmd`` family, and its presets per corpus
(the official config.json and trainer; ../shared/reference/dmd-parity/README.md sections 2, 4, 6, 7).
Torch-free: planning a study reads these.

Defaults are the official MOSI values; ``PRESETS['mosei']`` holds the MOSEI differences. Every quirk of
the official code is kept by default and named here with its switch (docs/fidelity.md, "DMD").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from dlf.config import MODALITIES
from dlf.domains import count, dropout, non_negative, positive
from dlf.errors import DLFError
from dlf.models.mmsa_config import require_all_modalities

# The six distillation edges in the official order (student j <- teacher i over l, v, a), written
# teacher>student: "l>v" distils language into vision.
EDGES = ("v>l", "a>l", "l>v", "a>v", "l>a", "v>a")


@dataclass(frozen=True)
class ModelConfig:
    family: str = "dmd"
    modalities: tuple[str, ...] = MODALITIES  # DMD decouples and distils all three; no subsets
    # "bert": BERT fine-tuned inside the model over ``text_bert`` (the official setting, as MISA's).
    # "features": the stored 768-d ``text`` array stands in for BERT's last hidden state (as DLF's
    # features mode; the parity fixture's setting, and the one for a CPU).
    text_encoder: Literal["features", "bert"] = "bert"
    pretrained: str = "bert-base-uncased"  # BERT of the bert mode: a hub name or a save_pretrained folder
    d_model: int = count(50, lo=4)  # width of everything (official dst_feature_dim_nheads[0])
    n_heads: int = count(10)  # heads of every transformer; the 2d-wide memory stacks too
    n_levels: int = count(4)  # depth of every transformer (official: max(4, nlevels) = 4)
    mem_levels: int = count(4)  # depth of the memory stacks (official: the same 4)
    conv_kernel_l: int = count(5)  # input Conv1d kernels: MOSI 5/5/5, MOSEI 5/1/3
    conv_kernel_a: int = count(5)
    conv_kernel_v: int = count(5)
    attn_mask: bool = True  # causal mask in every transformer (official)
    text_dropout: float = dropout(0.5)  # on the text encoder's output
    attn_dropout: float = dropout(0.3)  # attention types l, al, vl and the memory stacks
    attn_dropout_a: float = dropout(0.2)  # types a, la, va
    attn_dropout_v: float = dropout(0.0)  # types v, lv, av
    embed_dropout: float = dropout(0.2)
    relu_dropout: float = dropout(0.0)
    res_dropout: float = dropout(0.0)
    output_dropout: float = dropout(0.5)  # inside every residual head
    gd_homo_size: int = count(64)  # hidden size g of the homogeneous graph-distillation unit
    gd_hetero_size: int = count(32)  # ... of the heterogeneous one
    gd_temperature: float = positive(0.125)  # edges = softmax(temperature * edge logits) over all six edges
    # Quirk kept: the official model builds proj_cosine_{l,v,a} (Linear(d T', d) on the flattened
    # exclusive features), computes and returns them, and no loss reads them: counted and optimised
    # without ever getting a gradient (345,150 parameters at MOSI sizes). False leaves them out.
    dead_projections: bool = True


@dataclass(frozen=True)
class LossConfig:
    # total = task + gd_homo (logit + reg) + gd_hetero (logit + repr + reg)
    #       + recon R + cycle C + margin M + ortho O   (official: 0.1 (C + R + 0.1 (M + O)))
    # Every term is computed and logged; a weight of 0 keeps it out of the total.
    task_all: float = non_negative(1.0)  # L1 of the final prediction
    task_c: float = non_negative(1.0)  # L1 of the shared-branch prediction
    task_homo: float = non_negative(1.0)  # L1 of each homogeneous head (three terms)
    task_hetero: float = non_negative(1.0)  # L1 of each heterogeneous head (three terms)
    recon: float = non_negative(0.1)  # sum over m of MSE(reconstruction, projected input)
    cycle: float = non_negative(0.1)  # sum over m of MSE(s_m, s_m re-encoded from the reconstruction)
    margin: float = non_negative(0.01)  # margin loss on the common features (DLF's official L_m)
    ortho: float = non_negative(0.01)  # sum over m of the s_m / c_m orthogonality term
    gd_homo: float = non_negative(0.05)  # weight of the homogeneous GD loss (official 0.05)
    gd_hetero: float = non_negative(0.05)  # weight of the heterogeneous GD loss
    gd_reg: float = non_negative(10.0)  # inside each GD loss: (batch-mean edge - prior)^2 summed, times this
    gd_logit: float = non_negative(1.0)  # inside each GD loss: the edge-weighted logit distance (w_losses[0])
    gd_repr: float = non_negative(10.0)  # inside each GD loss: the representation term (w_losses[1])
    margin_scale: float = non_negative(0.15)  # adaptive margin = margin_scale * |y_anchor - y_negative|
    # Hand-set edge priors of the official run.py: p = softmax(v / prior_temperature) with v = 1 on the
    # listed edges (teacher>student, from EDGES) and 0 elsewhere; "" gives the uniform prior.
    homo_prior: str = "l>v,l>a"
    hetero_prior: str = "l>v,l>a,v>a"
    prior_temperature: float = positive(0.25)
    # Quirks kept:
    # the homogeneous unit's representation term (edge-weighted L1 between the modalities' homogeneous
    # representations, times gd_repr) is computed and logged (homo_repr) but left out of the loss; True adds it.
    homo_repr_in_total: bool = False
    # the orthogonality term on (T', B, d) tensors under PyTorch 1.9's cosine_embedding_loss: the cosine is
    # taken over the BATCH axis for every (time step, channel) cell. True: over each (sample, step) vector
    # of d channels (the reshape(-1, d) fix of DMD issue #6, DLF's own reading).
    ortho_per_vector: bool = False


# The official trainer (README section 7): Adam at 1e-4 without weight decay (config's weight_decay is
# never read) over the model and both GD units; micro-batches of 16, 10 per step, clip_grad_value 0.6
# after every backward; ReduceLROnPlateau(0.5, 5) on the valid L1 rounded to 4 decimals; early stop 10
# with no epoch cap; aligned_50.
_RECIPE: dict[str, Any] = {
    "train.lr": 1e-4, "train.weight_decay": 0.0, "train.batch_size": 16, "train.accumulation": 10,
    "train.clip_value": 0.6, "train.scheduler": "plateau", "train.plateau_factor": 0.5, "train.plateau_patience": 5,
    "train.patience": 10, "train.max_epochs": 1000, "train.val_loss": "mae", "train.val_decimals": 4,
    "train.min_delta": 1e-6, "data.aligned": True,
}

PRESETS: dict[str, dict[str, Any]] = {
    "mosi": dict(_RECIPE),
    "mosei": {**_RECIPE, "model.d_model": 30, "model.n_heads": 6, "model.conv_kernel_a": 1, "model.conv_kernel_v": 3,
              "model.text_dropout": 0.3, "model.attn_dropout": 0.4, "model.attn_dropout_a": 0.0,
              "model.embed_dropout": 0.0},
}


def prior_logits(edges: str, source: str, path: str) -> list[float]:
    """The official prior's logits v (1 on the listed edges, 0 elsewhere) in EDGES order."""
    names = [e.strip() for e in edges.split(",") if e.strip()]
    unknown = [e for e in names if e not in EDGES]
    if unknown:
        raise DLFError(f"{source}: {path}={edges!r}: unknown edge {unknown[0]!r}; list edges from "
                       f"{', '.join(EDGES)} (teacher>student), comma-separated, or '' for a uniform prior")
    return [1.0 if e in names else 0.0 for e in EDGES]


def check(cfg: Any, source: str) -> None:
    """Cross-field checks of a DMD run config (each field's range is its domain)."""
    m, loss = cfg.model, cfg.loss
    require_all_modalities(cfg, source, "DMD")
    if m.d_model % m.n_heads:
        raise DLFError(f"{source}: model.d_model ({m.d_model}) must be divisible by model.n_heads ({m.n_heads})")
    if m.text_encoder == "bert" and not str(m.pretrained).strip():
        raise DLFError(f"{source}: model.pretrained is empty; give a BERT hub name or a local folder")
    prior_logits(loss.homo_prior, source, "loss.homo_prior")
    prior_logits(loss.hetero_prior, source, "loss.hetero_prior")
    if loss.task_all == loss.task_c == loss.task_homo == loss.task_hetero == 0:
        raise DLFError(f"{source}: loss.task_all, loss.task_c, loss.task_homo and loss.task_hetero are all 0: "
                       f"no prediction is trained; give at least one a positive weight")
