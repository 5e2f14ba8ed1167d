"""dlf-ablate checkpoints: weights plus everything needed to rebuild the model, written atomically.

A checkpoint is one ``torch.save`` dict (loadable with ``weights_only=True``): ``format``, ``version``,
``config`` (the full RunConfig), ``dims`` and ``seq_lens`` (per modality), ``dataset`` (name, corpus,
path, fingerprint, ...), ``bert_config`` (the BERT architecture in the BERT text modes, so loading
never downloads weights), ``extra`` (free-form, JSON-like) and ``state_dict``. ``train``/``run``
checkpoints and converted official checkpoints share this format.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from dlf.config import RunConfig
from dlf.errors import DLFError
from dlf.data.fingerprint import atomic_write

__all__ = ["save_checkpoint", "load_checkpoint", "dataset_meta", "evaluate_checkpoint", "write_predictions",
           "write_outputs", "write_features",
           "Evaluation", "FORMAT"]

FORMAT = "dlf-ablate-checkpoint"
VERSION = 1


def dataset_meta(dataset: Any) -> dict[str, Any]:
    """The identifying fields of an ``MSADataset`` for a checkpoint (plain types only)."""
    return {"name": str(dataset.name), "display_name": str(dataset.display_name), "corpus": str(dataset.corpus),
            "path": str(dataset.path), "fingerprint": str(dataset.fingerprint), "aligned": bool(dataset.aligned),
            "synthetic": bool(dataset.synthetic)}


def _plain(obj: Any) -> Any:
    """Plain Python types only (numbers, strings, lists, dicts), so the file loads with ``weights_only=True``."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    for kind in (bool, int, float, str):  # subclasses too (numpy float64, TorchVersion)
        if isinstance(obj, kind):
            return kind(obj)
    if obj is None:
        return None
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:  # numpy / torch scalars
        return obj.item()
    return str(obj)


def _bert_config(model_or_state: Any, cfg: RunConfig, state: Mapping[str, torch.Tensor]) -> dict | None:
    if not any(k.startswith("text_encoder.bert.") for k in state):
        return None
    encoder = getattr(model_or_state, "text_encoder", None)
    if encoder is not None:
        return encoder.bert.config.to_dict()
    try:  # a bare state_dict: the config of the model it was built from, else inferred from the shapes
        from transformers import BertConfig

        return BertConfig.from_pretrained(cfg.model.pretrained).to_dict()
    except (OSError, ValueError):
        from dlf.models.text import bert_config_from_state

        return bert_config_from_state(state)


def save_checkpoint(path: str | os.PathLike, model_or_state: Any, cfg: RunConfig, dims: Mapping[str, int],
                    seq_lens: Mapping[str, int], dataset_meta: Mapping[str, Any], extra: Mapping | None = None) -> Path:
    """Write a checkpoint atomically (temporary file in the same folder, then rename); returns the path."""
    path = Path(path)
    module = isinstance(model_or_state, torch.nn.Module)
    state = model_or_state.state_dict() if module else model_or_state
    state = {k: v.detach().cpu() for k, v in state.items()}
    payload = {
        "format": FORMAT, "version": VERSION, "config": cfg.to_dict(),
        "dims": {k: int(v) for k, v in dims.items()}, "seq_lens": {k: int(v) for k, v in seq_lens.items()},
        "dataset": _plain(dict(dataset_meta)), "bert_config": _plain(_bert_config(model_or_state, cfg, state)),
        "extra": _plain(dict(extra or {})), "torch": str(torch.__version__), "state_dict": state,
    }
    return atomic_write(path, lambda fh: torch.save(payload, fh))


def _read(path: Path, map_location: Any) -> dict:
    if not path.is_file():
        raise DLFError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise DLFError(f"{path}: not a readable dlf-ablate checkpoint ({type(err).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        if isinstance(payload, dict) and "proj_l.weight" in payload:
            raise DLFError(f"{path}: this is an official DLF state_dict; convert it first: "
                           f"dlf-ablate convert-official {path} --dataset mosi --out model.pt")
        raise DLFError(f"{path}: not a dlf-ablate checkpoint (no '{FORMAT}' format tag)")
    if payload.get("version", 0) > VERSION:
        raise DLFError(f"{path}: checkpoint format version {payload['version']} is newer than this dlf-ablate "
                       f"reads ({VERSION}); upgrade dlf-ablate")
    return payload


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> tuple[torch.nn.Module, RunConfig, dict]:
    """(model in eval mode, its RunConfig, meta = every checkpoint field except the weights)."""
    from dlf.models.registry import build_model

    path = Path(path)
    payload = _read(path, map_location)
    cfg = RunConfig.from_dict(payload["config"])
    model = build_model(cfg, payload["dims"], payload["seq_lens"], bert_config=payload.get("bert_config"))
    try:
        result = model.load_state_dict(payload["state_dict"], strict=False)
    except RuntimeError as err:  # shape mismatches
        raise DLFError(f"{path}: the weights do not fit the model its config builds "
                       f"({str(err).splitlines()[-1].strip()})") from None
    problems = [f"missing {k}" for k in result.missing_keys] + [f"unexpected {k}" for k in result.unexpected_keys]
    if problems:
        shown = ", ".join(problems[:6]) + (f" ... (+{len(problems) - 6} more)" if len(problems) > 6 else "")
        raise DLFError(f"{path}: the weights do not fit the model its config builds ({shown}); "
                       f"the checkpoint was written by an incompatible dlf-ablate version")
    model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu").eval()
    return model, cfg, {k: v for k, v in payload.items() if k != "state_dict"}


@dataclass
class Evaluation:
    """Metrics and per-sample predictions of a checkpoint on one split (sample order as in the file)."""

    metrics: dict[str, float]
    ids: list[str]
    labels: np.ndarray
    preds: np.ndarray
    dataset: str  # display name ("MOSI", "synthetic-MOSI", ...)
    split: str
    outputs: dict[str, np.ndarray] | None = None  # every named output per sample, when asked for
    features: dict[str, np.ndarray] | None = None  # the family's representations per sample, when asked for


def evaluate_checkpoint(checkpoint: str | os.PathLike, dataset: str, split: str = "test", data_root: Any = None,
                        device: str = "cpu", batch_size: int | None = None, outputs: bool = False,
                        features: bool = False) -> Evaluation:
    """``msa_metrics`` of a saved model on ``split`` of ``dataset`` (loaded with the checkpoint's data config);
    ``features``: also the family's per-sample representations (refused before any data is read when the
    family exposes none)."""
    from dlf.data.mmsa import load_dataset
    from dlf.models.registry import implementation
    from dlf.train.evaluation import SplitTensors, all_features, all_outputs, evaluate
    from dlf.train.loop import resolve_device

    dev = resolve_device(device)
    model, cfg, meta = load_checkpoint(checkpoint, map_location=dev)
    if features and implementation(cfg.model.family).features is None:
        raise DLFError(f"{checkpoint}: model family {cfg.model.family!r} exposes no features; "
                       "evaluate it without --features")
    ds = load_dataset(dataset, cfg.data, data_root)
    if split not in ds.splits:
        raise DLFError(f"--split {split!r}: dataset {dataset!r} has splits {sorted(ds.splits)}")
    _check_shapes(Path(checkpoint), meta, cfg, ds, dataset)
    data = SplitTensors.from_split(ds.splits[split], cfg.model.text_encoder, dev)
    preds, metrics = evaluate(model, data, batch_size or cfg.train.eval_batch_size)
    batch = batch_size or cfg.train.eval_batch_size
    named = all_outputs(model, data, batch) if outputs else None
    vectors = all_features(model, data, batch) if features else None
    return Evaluation(metrics, list(ds.splits[split].ids), data.labels_numpy(), np.asarray(preds, dtype=np.float32),
                      ds.display_name, split, named, vectors)


def write_outputs(path: str | os.PathLike, result: Evaluation) -> Path:
    """An ``.npz`` of every named output (keys as the corpus names them) plus ``id`` and ``label``."""
    arrays = {**(result.outputs or {}), "id": np.asarray(result.ids, dtype=str), "label": result.labels}
    return atomic_write(path, lambda fh: np.savez(fh, **arrays))


def write_features(path: str | os.PathLike, result: Evaluation) -> Path:
    """An ``.npz`` of the family's representations (``fused``, then each branch's, (N, d) float32) plus
    ``id``, ``label`` (N,) and ``class7`` (N,): round(clip(label, -3, 3)) + 3, the Acc-7 class index."""
    labels = np.asarray(result.labels, dtype=np.float32)
    arrays = {**(result.features or {}), "id": np.asarray(result.ids, dtype=str), "label": labels,
              "class7": (np.round(np.clip(labels, -3.0, 3.0)) + 3).astype(np.int64)}
    return atomic_write(path, lambda fh: np.savez(fh, **arrays))


def _check_shapes(path: Path, meta: Mapping, cfg: RunConfig, ds: Any, spec: str) -> None:
    names = {"l": "text", "a": "audio", "v": "vision"}
    for m in cfg.model.modalities:
        width_matters = m != "l" or cfg.model.text_encoder == "features"
        want = (meta["dims"][m] if width_matters else None, meta["seq_lens"][m])
        have = (ds.dims[m] if width_matters else None, ds.seq_lens[m])
        if want != have:
            raise DLFError(f"{path}: the model expects {names[m]} features of width {want[0]} and length {want[1]}, "
                           f"but dataset {spec!r} has {have[0]} and {have[1]}; evaluate on the dataset it was trained on")


def write_predictions(path: str | os.PathLike, ids: list[str], labels: np.ndarray, preds: np.ndarray) -> Path:
    """CSV with columns id,label,pred (float32 values written exactly), replaced atomically."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(["id", "label", "pred"])
    for i, y, p in zip(ids, labels.tolist(), preds.tolist()):
        writer.writerow([i, f"{y:.9g}", f"{p:.9g}"])
    data = buf.getvalue().encode("utf-8")
    try:
        return atomic_write(path, lambda fh: fh.write(data))
    except OSError as err:  # a full disk, a folder that appeared meanwhile: nothing was replaced
        raise DLFError(f"{path}: cannot write the predictions ({err.strerror or err}); "
                       "choose another path") from None
