"""Figures (matplotlib, Agg): the ablation bar chart and the 7-class confusion matrix (Figure 4).

Both are drawn from plain inputs: a Table 2 structure, and arrays of test labels/predictions
(collect reads the ``predictions/test.csv`` artifacts). Each figure is saved as PDF and PNG.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from dlf.report.paper import LABELS
from dlf.report.tables import Table

CLASSES = ("HN", "N", "WN", "NT", "WP", "P", "HP")  # -3 .. 3, the paper's Figure 4 names
_UNITS = {"mae": " (\u2193)", "corr": " (\u2191)"}
_PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    return Figure(figsize=(width, height), layout="constrained")


def _save(fig, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".pdf"), stem.with_suffix(".png")]
    fig.draw_without_rendering()  # lay out once, then freeze it for both formats
    fig.set_layout_engine("none")
    for path in paths:
        fig.savefig(path, dpi=150)
    return paths


def ablation_chart(table: Table, stem: Path) -> list[Path]:
    """One panel per metric: a bar per row (mean, error bar = std), coloured by group, with the
    reference model's mean as a dashed line and the significance mark above tested bars."""
    rows = [(b, r) for b in table.blocks for r in b.rows if r.kind == "measured"]
    metrics = [c for c in table.columns if c.kind == "value"]
    names = list(dict.fromkeys(b.title or "full model" for b, _ in rows))
    colors = [_PALETTE[names.index(b.title or "full model") % len(_PALETTE)] for b, _ in rows]
    fig = _figure(max(6.0, 0.45 * len(rows) * len(metrics) / 2 + 3), 4.2)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    x = np.arange(len(rows))
    ref_first = bool(rows) and rows[0][0].title is None and rows[0][1].label == table.reference_label
    for ax, col in zip(axes, metrics):
        cells = [r.cells.get(col.key) for _, r in rows]
        means = np.array([np.nan if c is None or c.mean is None else c.mean for c in cells])
        errs = np.array([0.0 if c is None or c.std is None or c.n < 2 else c.std for c in cells])
        ax.bar(x, np.nan_to_num(means), yerr=errs, color=colors, capsize=3, edgecolor="black", linewidth=0.5)
        if ref_first and not np.isnan(means[0]):
            ax.axhline(means[0], color="black", linestyle="--", linewidth=0.8)
        for i, c in enumerate(cells):
            if c is not None and c.sig and c.mean is not None:
                ax.annotate("*", (x[i], c.mean + errs[i]), ha="center", va="bottom", fontsize=12)
        ax.set_title(LABELS[col.metric] + _UNITS.get(col.metric, " (%)"))
        ax.set_xticks(x, [r.label for _, r in rows], rotation=60, ha="right", fontsize=8)
        finite = means[~np.isnan(means)]
        if finite.size:  # zoom on the data: differences of a point are invisible on a 0-100 axis
            lo, hi = (finite - errs[~np.isnan(means)]).min(), (finite + errs[~np.isnan(means)]).max()
            pad = max((hi - lo) * 0.15, 1e-3)
            ax.set_ylim(max(0.0, lo - pad), hi + pad)
    handles = [_patch(_PALETTE[i % len(_PALETTE)], n) for i, n in enumerate(names)]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), fontsize=8)
    fig.suptitle(f"Ablations on {_dataset_title(table)} (mean \u00b1 std over seeds; * Holm p < {table.alpha:g})",
                 fontsize=10)
    return _save(fig, stem)


def _patch(color: str, label: str):
    from matplotlib.patches import Patch

    return Patch(facecolor=color, edgecolor="black", linewidth=0.5, label=label)


def _dataset_title(table: Table) -> str:
    d = table.datasets[0]
    return f"{d.display} (generated data)" if d.synthetic else d.display


def seven_class(values: Sequence[float]) -> np.ndarray:
    """Sentiment scores -> class index 0..6 (HN..HP): round(clip(x, -3, 3)) + 3, as Acc-7 does."""
    return (np.round(np.clip(np.asarray(values, dtype=float), -3.0, 3.0)) + 3).astype(int)


def confusion_matrix(labels: Sequence[float], preds: Sequence[float]) -> np.ndarray:
    """7x7 counts: rows = true class, columns = predicted class."""
    out = np.zeros((7, 7), dtype=int)
    np.add.at(out, (seven_class(labels), seven_class(preds)), 1)
    return out


def confusion_figure(labels: Sequence[float], preds: Sequence[float], stem: Path, title: str) -> list[Path]:
    """Left: the confusion matrix (counts; colour = share of the true class). Right: accuracy of
    each class, as in the paper's Figure 4."""
    counts = confusion_matrix(labels, preds)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    fig = _figure(10.0, 4.4)
    left, right = fig.subplots(1, 2, width_ratios=[1.15, 1])
    image = left.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(7):
        for j in range(7):
            left.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                      color="white" if share[i, j] > 0.55 else "black")
    left.set_xticks(range(7), CLASSES)
    left.set_yticks(range(7), [f"{c} ({t})" for c, t in zip(CLASSES, totals[:, 0])])
    left.set_xlabel("predicted class")
    left.set_ylabel("true class (count)")
    left.set_title("confusion matrix (colour: share of the true class)", fontsize=9)
    fig.colorbar(image, ax=left, fraction=0.046)
    accuracy = np.diag(share) * 100
    right.bar(range(7), accuracy, color="#4c72b0", edgecolor="black", linewidth=0.5)
    for i, acc in enumerate(accuracy):
        right.text(i, acc + 1, "-" if totals[i, 0] == 0 else f"{acc:.1f}", ha="center", fontsize=8)
    right.set_xticks(range(7), CLASSES)
    right.set_ylim(0, 105)
    right.set_xlabel("true class")
    right.set_title("accuracy per true class (%)", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return _save(fig, stem)
