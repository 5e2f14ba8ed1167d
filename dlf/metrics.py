"""The MSA regression metrics exactly as MMSA / DLF compute them (``metricsTop.py``).

With p = predictions and t = labels:

* ``mae``: mean |p - t| on raw values; ``corr``: Pearson r (``np.corrcoef``).
* ``acc7`` / ``acc5``: clip p and t to [-3, 3] / [-2, 2], round both half to even (``np.round``),
  exact-match accuracy.
* ``acc2`` / ``f1`` ("non0", the paper's variant): drop samples with t == 0; classes t > 0 vs
  p > 0; accuracy and support-weighted F1 (sklearn ``f1_score(average='weighted')``).
* ``acc2_has0`` / ``f1_has0``: all samples; classes t >= 0 vs p >= 0.

Accuracies and F1 are unrounded fractions in [0, 1]. Degenerate inputs never crash: a constant
input gives ``corr`` NaN, all-zero labels give non0 metrics NaN, and NaN/inf inputs give all NaN,
each with a warning.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

METRIC_KEYS = ("acc7", "acc5", "acc2", "f1", "acc2_has0", "f1_has0", "corr", "mae")
LOWER_IS_BETTER = frozenset({"mae"})


def msa_metrics(pred, true) -> dict[str, float]:
    """All MSA metrics of predictions ``pred`` against labels ``true`` (1-d arrays of equal length)."""
    p, t = _as_vector(pred), _as_vector(true)
    if p.shape != t.shape:
        raise ValueError(f"pred has {p.size} values but true has {t.size}")
    if p.size == 0:
        raise ValueError("msa_metrics needs at least one prediction")
    if not (np.isfinite(p).all() and np.isfinite(t).all()):  # e.g. a diverged model: report, don't crash
        warnings.warn("NaN or inf in predictions or labels: every metric is reported as NaN", RuntimeWarning,
                      stacklevel=2)
        return {key: math.nan for key in METRIC_KEYS}
    nonzero = t != 0
    if nonzero.any():
        acc2 = _accuracy(p[nonzero] > 0, t[nonzero] > 0)
        f1 = weighted_f1(t[nonzero] > 0, p[nonzero] > 0)
    else:
        warnings.warn("all labels are 0: acc2 and f1 (non0) are undefined, reported as NaN", RuntimeWarning,
                      stacklevel=2)
        acc2 = f1 = math.nan
    return {
        "acc7": clipped_accuracy(p, t, 3.0),
        "acc5": clipped_accuracy(p, t, 2.0),
        "acc2": acc2,
        "f1": f1,
        "acc2_has0": _accuracy(p >= 0, t >= 0),
        "f1_has0": weighted_f1(t >= 0, p >= 0),
        "corr": pearson(p, t),
        "mae": float(np.mean(np.abs(p - t))),
    }


def clipped_accuracy(p: np.ndarray, t: np.ndarray, bound: float) -> float:
    """Acc-7 (bound 3) / Acc-5 (bound 2): clip, round half to even, exact match."""
    return _accuracy(np.round(np.clip(p, -bound, bound)), np.round(np.clip(t, -bound, bound)))


def pearson(p: np.ndarray, t: np.ndarray) -> float:
    """Pearson r as ``np.corrcoef``; NaN with a warning when either side is constant."""
    if p.size < 2 or np.all(p == p[0]) or np.all(t == t[0]):
        warnings.warn("Pearson correlation is undefined for constant predictions or labels; reported as NaN",
                      RuntimeWarning, stacklevel=3)
        return math.nan
    return float(np.corrcoef(p, t)[0, 1])


def weighted_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Support-weighted F1 over the classes in y_true or y_pred, as sklearn ``average='weighted'``.

    Per class c: F1 = 2 tp / (n_true + n_pred), 0 when that is 0/0 (sklearn's default
    ``zero_division``); the mean is weighted by n_true, so a class that is only predicted counts 0.
    """
    y_true, y_pred = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    if y_true.size == 0:
        return math.nan
    total, score = 0, 0.0
    for c in np.union1d(y_true, y_pred):
        n_true, n_pred = int(np.sum(y_true == c)), int(np.sum(y_pred == c))
        tp = int(np.sum((y_true == c) & (y_pred == c)))
        f1 = 2.0 * tp / (n_true + n_pred) if n_true + n_pred else 0.0
        score += n_true * f1
        total += n_true
    return score / total


def _accuracy(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


def _as_vector(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, possibly on a GPU or with grad
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)
