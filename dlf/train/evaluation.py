"""A split as device tensors, and batched inference over it (used by training and evaluation).

A split is moved to the device once; training draws micro-batches with ``index_select`` from a
per-epoch permutation, evaluation walks the split in order with views. Nothing is re-collated.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from dlf.errors import DLFError
from dlf.models.registry import prediction
from dlf.train.lanes import LanePool

__all__ = ["SplitTensors", "predict", "evaluate", "all_outputs", "all_features"]


@dataclass
class SplitTensors:
    text: torch.Tensor  # (N, T_l, D_text) float features, or (N, 3, T_l) long BERT ids
    audio: torch.Tensor  # (N, T_a, D_a)
    vision: torch.Tensor  # (N, T_v, D_v)
    labels: torch.Tensor  # (N,)

    @classmethod
    def from_split(cls, split: Any, text_encoder: str, device: torch.device | str) -> SplitTensors:
        """``split`` is a ``dlf.data.Split``: ``text`` in features mode, ``text_bert`` in the BERT modes."""
        text = split.text if text_encoder == "features" else split.text_bert
        if text is None:
            key = "text" if text_encoder == "features" else "text_bert"
            raise DLFError(f"model.text_encoder={text_encoder!r} needs the key {key!r}, which this dataset lacks")

        def move(x: Any, dtype: torch.dtype) -> torch.Tensor:
            return torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).to(device=device, dtype=dtype)

        return cls(text=move(text, torch.float32 if text_encoder == "features" else torch.long),
                   audio=move(split.audio, torch.float32), vision=move(split.vision, torch.float32),
                   labels=move(split.labels, torch.float32).reshape(-1))

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    @property
    def device(self) -> torch.device:
        return self.labels.device

    def take(self, idx: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """((text, audio, vision), labels) of the samples ``idx`` (a 1-d index tensor on the device)."""
        inputs = tuple(x.index_select(0, idx) for x in (self.text, self.audio, self.vision))
        return inputs, self.labels.index_select(0, idx)

    def labels_numpy(self) -> np.ndarray:
        return self.labels.detach().cpu().numpy().astype(np.float32)


def predict(model: torch.nn.Module, data: SplitTensors, batch_size: int = 64,
            pool: LanePool | None = None) -> torch.Tensor:
    """Final-head predictions (N,) for the whole split, in order, in eval mode without autograd.

    ``pool`` computes the batches concurrently on its lanes (dlf.train.lanes); each batch's result is the same.
    """
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        items = [(start, batch_size) for start in range(0, data.n, batch_size)]
        outs = list((pool or LanePool()).map(_predict_batch, items, model, data))
    model.train(was_training)
    return torch.cat(outs) if outs else torch.zeros(0, device=data.device)


def _predict_batch(model: torch.nn.Module, data: SplitTensors, item: tuple[int, int]) -> torch.Tensor:
    """A pool task: predictions for ``batch`` samples from ``start`` (eval mode, no autograd)."""
    start, batch = item
    sl = slice(start, start + batch)
    with torch.inference_mode():
        out = model(data.text[sl], data.audio[sl], data.vision[sl], with_losses=False)
        return prediction(model, out).reshape(-1).float()


def all_outputs(model: torch.nn.Module, data: SplitTensors, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Every named output of the model over the split, batch by batch in order (eval mode, no autograd,
    loss-only outputs included): for parity checks and feature plots. Batch-first outputs are joined."""
    from dlf.models.registry import named_outputs

    return _collect(model, data, batch_size, True, named_outputs)


def all_features(model: torch.nn.Module, data: SplitTensors, batch_size: int = 64) -> dict[str, np.ndarray]:
    """The family's per-sample representations over the split (``features`` of the model seam: ``fused``
    and each branch's vector, (N, d) each), batch by batch in order, in eval mode without autograd."""
    from dlf.models.registry import features

    return _collect(model, data, batch_size, False,
                    lambda out: {k: v.reshape(v.shape[0], -1) for k, v in features(model, out).items()})


def _collect(model: torch.nn.Module, data: SplitTensors, batch_size: int, with_losses: bool,
             pick: Callable[[Any], dict[str, torch.Tensor]]) -> dict[str, np.ndarray]:
    """``pick(outputs)`` of every batch in order, joined per name (eval mode, no autograd)."""
    was_training = model.training
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}
    with torch.inference_mode():
        for start in range(0, data.n, batch_size):
            sl = slice(start, start + batch_size)
            out = model(data.text[sl], data.audio[sl], data.vision[sl], with_losses=with_losses)
            for name, value in pick(out).items():
                parts.setdefault(name, []).append(value.detach().float().cpu().numpy())
    model.train(was_training)
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def evaluate(model: torch.nn.Module, data: SplitTensors, batch_size: int = 64, epoch: int | None = None,
             pool: LanePool | None = None) -> tuple[np.ndarray, dict[str, float]]:
    """(predictions as a numpy array, ``msa_metrics``) on one split; non-finite predictions are an error."""
    from dlf.metrics import msa_metrics

    pred = predict(model, data, batch_size, pool).cpu().numpy()
    if not np.isfinite(pred).all():
        when = f"epoch {epoch}: " if epoch is not None else ""
        raise DLFError(f"{when}the model predicts non-finite values (the weights diverged); "
                       f"lower train.lr or check the input features for NaN/inf values")
    return pred, {k: float(v) for k, v in msa_metrics(pred, data.labels_numpy()).items()}
