"""The analyses' figures (matplotlib, Agg, no pyplot), each saved as PDF and PNG: the t-SNE panels
(Figure 5), the per-modality bars (Figure 1, right) and the robustness curves. Plain inputs only."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from dlf.report.figures import CLASSES, _figure, _save, seven_class

__all__ = ["tsne_figure", "modality_figure", "robustness_figure", "seven_class", "CLASS_COLORS",
           "MODALITY_METRICS"]

# HN .. HP: a diverging scale (red negative, grey neutral, blue positive), readable in greyscale too
CLASS_COLORS = ("#b2182b", "#ef8a62", "#fddbc7", "#bdbdbd", "#d1e5f0", "#67a9cf", "#2166ac")
MODALITY_METRICS = ("acc2", "f1", "acc7", "mae")
_TITLES = {"acc2": "Acc-2 (%)", "f1": "F1 (%)", "acc7": "Acc-7 (%)", "acc5": "Acc-5 (%)", "mae": "MAE (\u2193)",
           "corr": "Corr", "acc2_has0": "Acc-2 has0 (%)", "f1_has0": "F1 has0 (%)"}
_LINES = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")


def tsne_figure(panels: Sequence, stem: Path, title: str) -> list[Path]:
    """One square panel per variant (``dlf.analysis.tsne.Panel``), points coloured by class, one legend."""
    from matplotlib.lines import Line2D

    fig = _figure(3.0 * len(panels) + 0.4, 3.6)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        for k in range(7):
            pts = panel.points[panel.classes == k]
            ax.scatter(pts[:, 0], pts[:, 1], s=6, color=CLASS_COLORS[k], linewidths=0)
        ax.set_title(f"{panel.label} (d={panel.width})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Line2D([], [], marker="o", linestyle="", color=CLASS_COLORS[k], label=c) for k, c in enumerate(CLASSES)]
    fig.legend(handles=handles, loc="outside lower center", ncols=7, fontsize=8)
    fig.suptitle(title, fontsize=9)
    return _save(fig, stem)


def modality_figure(summary: Sequence[dict], stem: Path, title: str,
                    metrics: Sequence[str] = MODALITY_METRICS) -> list[Path]:
    """One panel per metric, a bar per row of ``summary`` ({label, <m>_mean, <m>_std, <m>_n} in points),
    the std over seeds as error bars (none for a single seed)."""
    fig = _figure(max(6.0, 2.4 * len(metrics)), 3.4)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    x = np.arange(len(summary))
    for ax, m in zip(axes, metrics):
        means = np.array([row.get(f"{m}_mean", np.nan) for row in summary], dtype=float)
        errs = np.array([row.get(f"{m}_std") if row.get(f"{m}_n", 0) > 1 else 0.0 for row in summary], dtype=float)
        errs = np.nan_to_num(errs)
        ax.bar(x, np.nan_to_num(means), yerr=errs, capsize=3, color=[_LINES[i % len(_LINES)] for i in x],
               edgecolor="black", linewidth=0.5)
        for i, value in enumerate(means):
            if not np.isnan(value):
                ax.annotate(f"{value:.3f}" if m == "mae" else f"{value:.1f}", (x[i], value + errs[i]),
                            ha="center", va="bottom", fontsize=7)
        ax.set_title(_TITLES.get(m, m), fontsize=9)
        ax.set_xticks(x, [row["label"] for row in summary], rotation=30, ha="right", fontsize=8)
        finite = means[~np.isnan(means)]
        if finite.size:
            hi = (finite + errs[~np.isnan(means)]).max()
            ax.set_ylim(0, hi * 1.15 if hi > 0 else 1)
    fig.suptitle(title, fontsize=9)
    return _save(fig, stem)


def robustness_figure(curves: dict, drops: dict, levels: Sequence[float], stem: Path, title: str,
                      metric: str) -> list[Path]:
    """One panel per modality: ``metric`` against the noise level per method (mean, error bars = std over
    seeds); a dropped modality as a hollow marker right of the curve.

    curves: modality -> [(label, means (len(levels),), stds)]; drops: modality -> {label: (mean, std)}.
    """
    mods = list(curves) or list(drops)
    fig = _figure(3.4 * len(mods) + 0.4, 3.4)
    axes = fig.subplots(1, len(mods), squeeze=False, sharey=True)[0]
    xs = np.asarray(levels, dtype=float)
    right = (xs.max() if xs.size else 0.0) + max(0.25, 0.2 * (xs.max() if xs.size else 1.0))
    for ax, m in zip(axes, mods):
        labels = [c[0] for c in curves.get(m, [])] or list(drops.get(m, {}))
        for i, label in enumerate(labels):
            color = _LINES[i % len(_LINES)]
            for name, means, stds in curves.get(m, []):
                if name == label and xs.size:
                    ax.errorbar(xs, means, yerr=np.nan_to_num(stds), marker="o", ms=3, capsize=2, color=color,
                                label=label)
            if label in drops.get(m, {}):
                mean, std = drops[m][label]
                ax.errorbar([right], [mean], yerr=[np.nan_to_num(std)], marker="o", mfc="none", capsize=2,
                            color=color, label=None if curves.get(m) else label)
        ticks = list(xs) + ([right] if drops.get(m) else [])
        ax.set_xticks(ticks, [f"{v:g}" for v in xs] + (["drop"] if drops.get(m) else []), fontsize=8)
        ax.set_xlabel("noise (x training std)", fontsize=8)
        ax.set_title(f"modality {m.upper()}", fontsize=9)
    axes[0].set_ylabel(_TITLES.get(metric, metric), fontsize=9)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=min(len(names), 5) or 1, fontsize=8)
    fig.suptitle(title, fontsize=9)
    return _save(fig, stem)
