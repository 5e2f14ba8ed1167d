"""Checks of one split's arrays in an MMSA pickle, each converting what it checks: a failure is one
line naming the file, split and key, and the fix."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dlf.errors import DLFError

if TYPE_CHECKING:
    import torch

_SCAN = 256  # samples per block when scanning features for NaN / inf (bounds temporary memory)


def split_error(path: Path, split: str, key: str, problem: str, fix: str) -> DLFError:
    return DLFError(f"{path}: split '{split}', key '{key}': {problem}; {fix}")


def _asarray(path: Path, split: str, key: str, value: Any) -> np.ndarray:
    """``value`` as one ndarray: nested lists and object arrays of equal-shape rows are stacked."""
    try:
        arr = np.asarray(value)
        if arr.dtype == object:  # e.g. an object array holding one float array per sample
            arr = np.asarray(arr.tolist(), dtype=np.float64)
    except (TypeError, ValueError):
        ragged = _ragged(value)
        if ragged:
            raise split_error(path, split, key, f"ragged rows ({ragged})", "pad every sample to the same shape "
                         "(MMSA stores one array per key, zero-padded past each sample's length)") from None
        raise split_error(path, split, key, "values are not numeric", "store a float array") from None
    return arr


def _ragged(value: Any) -> str | None:
    """Where rows differ in shape ('sample 0 has shape (50, 5), sample 3 (48, 5)'), else None."""
    if not isinstance(value, (list, tuple, np.ndarray)) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return None
    first = None
    for i, row in enumerate(value):
        try:
            shape = tuple(np.shape(row))
        except ValueError:
            return f"sample {i} is itself ragged"
        if first is None:
            first = shape
        elif shape != first:
            return f"sample 0 has shape {first}, sample {i} {shape}"
    return None


def _numeric(path: Path, split: str, key: str, value: Any, rank: int, n: int | None) -> np.ndarray:
    """``value`` as a numeric ndarray of the given rank (and first dimension ``n``), not yet cast."""
    arr = _asarray(path, split, key, value)
    if arr.dtype.kind not in "fiub":
        raise split_error(path, split, key, f"dtype {arr.dtype} is not numeric", "store a float array")
    if arr.ndim != rank:
        raise split_error(path, split, key, f"rank {arr.ndim} (shape {arr.shape}), expected rank {rank}",
                     "store the MMSA layout (see docs)")
    if n is not None and arr.shape[0] != n:
        raise split_error(path, split, key, f"{arr.shape[0]} samples but regression_labels has {n}",
                     "every key of a split needs one row per sample")
    return arr


def features(path: Path, split: str, key: str, value: Any, n: int) -> np.ndarray:
    """float32 (N, T, D); NaN or +inf is an error, -inf becomes 0 (as MMSA does for audio)."""
    arr = np.ascontiguousarray(_numeric(path, split, key, value, 3, n), dtype=np.float32)
    if not arr.flags.writeable:
        arr = arr.copy()
    for lo in range(0, n, _SCAN):
        block = arr[lo: lo + _SCAN]
        bad = np.isnan(block)
        if bad.any():
            where = lo + int(np.argwhere(bad)[0][0])
            raise split_error(path, split, key, f"NaN values (first at sample {where})", "clean or drop those samples")
        if np.isposinf(block).any():
            where = lo + int(np.argwhere(np.isposinf(block))[0][0])
            raise split_error(path, split, key, f"+inf values (first at sample {where})", "clean or drop those samples")
        block[np.isneginf(block)] = 0.0
    return arr


def labels(path: Path, split: str, value: Any) -> np.ndarray:
    arr = _asarray(path, split, "regression_labels", value)
    if arr.ndim == 2 and arr.shape[1] == 1:  # (N, 1) as some exports store them
        arr = arr[:, 0]
    arr = _numeric(path, split, "regression_labels", arr, 1, None).astype(np.float32)
    if arr.shape[0] == 0:
        raise split_error(path, split, "regression_labels", "no samples", "every split needs at least one sample")
    bad = ~np.isfinite(arr) | (np.abs(arr) > 3.0 + 1e-4)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise split_error(path, split, "regression_labels", f"label {float(arr[i]):g} at sample {i} is outside [-3, 3]",
                     "MSA sentiment labels lie in [-3, 3]")
    return np.clip(arr, -3.0, 3.0)


def text_bert(path: Path, split: str, value: Any, n: int, t_text: int) -> np.ndarray:
    arr = _numeric(path, split, "text_bert", value, 3, n)
    if arr.shape[1:] != (3, t_text):
        raise split_error(path, split, "text_bert", f"shape {arr.shape}, expected (N, 3, {t_text}) like 'text'",
                     "rows are input_ids, attention_mask, token_type_ids")
    if arr.dtype.kind == "f" and not (np.isfinite(arr).all() and np.array_equal(arr, np.round(arr))):
        raise split_error(path, split, "text_bert", "token ids are not whole numbers", "store integer token ids")
    if (arr < 0).any():
        raise split_error(path, split, "text_bert", "negative token ids", "store integer token ids")
    return arr.astype(np.int64)


def lengths(path: Path, split: str, key: str, value: Any, n: int, t_max: int) -> torch.Tensor | None:
    if value is None:
        return None
    arr = _numeric(path, split, key, value, 1, n)
    if not np.isfinite(arr).all() or (arr < 0).any() or (arr > t_max).any():
        raise split_error(path, split, key, f"lengths outside [0, {t_max}]", "lengths count valid time steps")
    import torch

    return torch.from_numpy(arr.astype(np.int64))


def strings(path: Path, split: str, key: str, value: Any, n: int) -> list[str]:
    try:
        arr = np.asarray(value, dtype=object).reshape(-1) if not isinstance(value, list) else value
    except ValueError:  # e.g. a tuple of arrays of different shapes
        raise split_error(path, split, key, "not one entry per sample", "store a list or 1-D array of strings") from None
    if len(arr) != n:
        raise split_error(path, split, key, f"{len(arr)} entries but regression_labels has {n}",
                     "every key of a split needs one row per sample")
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in arr]
