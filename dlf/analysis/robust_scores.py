"""Robustness tables, scores and curves from the per-run rows of ``dlf.analysis.robustness``.

Scores (after MultiBench, Liang et al. 2021, ``eval_scripts/robustness.py``; definitions in
docs/analysis.md), per (dataset, method, modality) on the curve of one metric y over the noise levels
s_0 = 0 < s_1 < ... < s_K:

- relative robustness RR = (trapezoid area under y(s)) / (s_K - s_0): the curve's mean height, per seed,
  then mean +- std over seeds;
- effective robustness ER = mean over k >= 1 of (y_k - (a_k + b_k y_0)), where y_k = a_k + b_k y_0 is the
  least-squares line across the methods' mean curves (Taori et al. 2020's "linear fit"): how much better
  a method holds up than the methods' trend predicts from its clean score. It needs 3 or more methods
  with different clean scores; otherwise it is left empty.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from dlf.report.paper import LABELS, PERCENT_METRICS

__all__ = ["TABLE_METRICS", "summarize", "scores", "write_outputs", "relative_robustness", "effective_robustness"]

TABLE_METRICS = ("acc7", "acc2", "f1", "mae")
_KEYS = ["dataset", "variant", "modality", "condition", "noise"]


def _points(frame: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    out = frame.copy()
    for m in metrics:
        out[m] = frame[m].astype(float) * (100.0 if m in PERCENT_METRICS else 1.0)
    return out


def summarize(frame: pd.DataFrame, metrics: Sequence[str] = TABLE_METRICS, ddof: int = 1) -> pd.DataFrame:
    """Mean, std (``ddof``; empty for one seed) and n over seeds per (dataset, variant, modality, condition,
    noise), in display units (percent metrics x100), rows in the runs' order."""
    pts = _points(frame, metrics).assign(noise=frame["noise"].fillna(-1.0))
    rows = []
    for key, grp in pts.groupby(_KEYS, sort=False):
        row = dict(zip(_KEYS, key)) | {"label": grp["label"].iloc[0], "order": grp["order"].iloc[0],
                                       "n": len(grp), "seeds": ",".join(map(str, sorted(grp["seed"])))}
        for m in metrics:
            v = grp[m].to_numpy(dtype=float)
            row[f"{m}_mean"] = float(v.mean())
            row[f"{m}_std"] = float(v.std(ddof=ddof)) if len(v) > ddof else float("nan")
        rows.append(row)
    out = pd.DataFrame(rows)
    out["noise"] = out["noise"].where(out["noise"] >= 0)
    return out


def relative_robustness(levels: Sequence[float], values: Sequence[float]) -> float:
    s, y = np.asarray(levels, dtype=float), np.asarray(values, dtype=float)
    if len(s) < 2 or s[-1] == s[0]:
        return float("nan")
    return float(np.sum((y[1:] + y[:-1]) * np.diff(s)) / 2 / (s[-1] - s[0]))


def effective_robustness(curves: dict[str, np.ndarray]) -> dict[str, float]:
    """method -> ER from the methods' mean curves (index 0 = clean); NaN when the fit is undefined."""
    names = list(curves)
    y = np.array([curves[n] for n in names], dtype=float)  # (methods, levels)
    if len(names) < 3 or y.shape[1] < 2 or np.ptp(y[:, 0]) == 0:
        return {n: float("nan") for n in names}
    gaps = []
    for k in range(1, y.shape[1]):
        b, a = np.polyfit(y[:, 0], y[:, k], 1)
        gaps.append(y[:, k] - (a + b * y[:, 0]))
    return dict(zip(names, np.mean(gaps, axis=0).tolist()))


def scores(frame: pd.DataFrame, metric: str, ddof: int = 1) -> pd.DataFrame:
    """RR (mean, std over seeds) and ER per (dataset, variant, modality) on ``metric``'s noise curve."""
    pts = _points(frame, [metric])
    noisy = pts[pts["condition"] == "noise"].sort_values("noise", kind="stable")
    rows = []
    for (dataset, modality), grp in noisy.groupby(["dataset", "modality"], sort=False):
        means = {}
        for variant, mine in grp.groupby("variant", sort=False):
            per_seed = [relative_robustness(g["noise"], g[metric]) for _, g in mine.groupby("seed")]
            means[variant] = mine.groupby("noise")[metric].mean().to_numpy()
            rr = np.asarray(per_seed, dtype=float)
            rows.append({"dataset": dataset, "variant": variant, "label": mine["label"].iloc[0], "modality": modality,
                         "metric": metric, "rr_mean": float(rr.mean()),
                         "rr_std": float(rr.std(ddof=ddof)) if len(rr) > ddof else float("nan"), "n": len(rr)})
        er = effective_robustness(means)
        for row in rows:
            if row["dataset"] == dataset and row["modality"] == modality:
                row["er"] = er[row["variant"]]
    return pd.DataFrame(rows)


def _cell(mean: float, std: float, digits: int, pm: str) -> str:
    if mean != mean:
        return "-"
    return f"{mean:.{digits}f}" + ("" if std != std else f" {pm} {std:.{digits}f}")


def _condition(row: dict, latex: bool = False) -> str:
    if row["condition"] == "clean":
        return "clean"
    s = "$\\sigma$" if latex else "\u03c3"
    return f"{row['modality'].upper()} dropped" if row["condition"] == "drop" else f"{row['modality'].upper()} {s}={row['noise']:g}"


def _table_lines(summary: pd.DataFrame, latex: bool) -> list[str]:
    pm, sep, end = ("$\\pm$", " & ", " \\\\") if latex else ("\u00b1", " | ", " |")
    head = ["method", "input"] + [LABELS[m] for m in TABLE_METRICS]
    lines = ([f"\\begin{{tabular}}{{ll{'r' * len(TABLE_METRICS)}}}", "\\toprule", sep.join(head) + end, "\\midrule"]
             if latex else ["| " + sep.join(head) + end, "|" + "---|" * len(head)])
    for row in summary.to_dict("records"):
        cells = [_cell(row[f"{m}_mean"], row[f"{m}_std"], 2 if m in PERCENT_METRICS else 3, pm) for m in TABLE_METRICS]
        label = row["label"].replace("&", "\\&") if latex else row["label"]
        lines.append(("" if latex else "| ") + sep.join([label, _condition(row, latex)] + cells) + end)
    return lines + (["\\bottomrule", "\\end{tabular}"] if latex else [])


def _score_lines(table: pd.DataFrame, latex: bool) -> list[str]:
    pm, sep, end = ("$\\pm$", " & ", " \\\\") if latex else ("\u00b1", " | ", " |")
    head = ["method", "modality", "relative robustness", "effective robustness"]
    lines = (["\\begin{tabular}{llrr}", "\\toprule", sep.join(head) + end, "\\midrule"] if latex
             else ["| " + sep.join(head) + end, "|---|---|---|---|"])
    for row in table.to_dict("records"):
        cells = [row["label"], row["modality"].upper(), _cell(row["rr_mean"], row["rr_std"], 2, pm),
                 _cell(row["er"], float("nan"), 2, pm)]
        lines.append(("" if latex else "| ") + sep.join(cells) + end)
    return lines + (["\\bottomrule", "\\end{tabular}"] if latex else [])


def write_outputs(frame: pd.DataFrame, study: str, out: Path, levels: Sequence[float], metric: str,
                  ddof: int, seed: int) -> list[Path]:
    """robustness-<study>.csv/.md/.tex, robustness-scores-<study>.csv and fig-robustness-<study>-<dataset>."""
    from dlf.report.tables import slug

    summary, table = summarize(frame, TABLE_METRICS, ddof), scores(frame, metric, ddof)
    stem = f"robustness-{slug(study)}"
    md, tex = [], []
    for dataset, mine in summary.groupby("dataset", sort=False):
        where = _where(frame, dataset)
        note = (f"{study} on {where}, test split, mean {'±'} std over seeds; noise: Gaussian, strength "
                f"\u03c3 x the training std per feature (noise seed {seed})")
        md += [f"## {where}", "", note, ""] + _table_lines(mine, False) + [""]
        tex += [f"% {note}"] + _table_lines(mine, True) + [""]
        sc = table[table["dataset"] == dataset]
        head = f"Scores on the {LABELS.get(metric, metric)} noise curve (MultiBench; see docs/analysis.md)"
        md += [head, ""] + _score_lines(sc, False) + [""]
        tex += [f"% {head}"] + _score_lines(sc, True) + [""]
    paths = [_write(out / f"{stem}.csv", summary.to_csv(index=False)),
             _write(out / f"{stem}-scores.csv", table.to_csv(index=False)),
             _write(out / f"{stem}.md", "\n".join(md)), _write(out / f"{stem}.tex", "\n".join(tex))]
    return paths + _curves(summary, frame, study, out, levels, metric)


def _write(path: Path, text: str) -> Path:
    from dlf.data.fingerprint import atomic_write

    data = text.encode("utf-8")
    return atomic_write(path, lambda fh: fh.write(data))


def _where(frame: pd.DataFrame, dataset: str) -> str:
    from dlf.analysis.runs import display_name

    row = frame[frame["dataset"] == dataset].iloc[0]
    return display_name(dataset, str(row["corpus"] or ""), bool(row["synthetic"]))


def _curves(summary: pd.DataFrame, frame: pd.DataFrame, study: str, out: Path, levels: Sequence[float],
            metric: str) -> list[Path]:
    from dlf.analysis.plots import robustness_figure
    from dlf.report.tables import slug

    full = summarize(frame, [metric])
    paths = []
    for dataset, mine in full.groupby("dataset", sort=False):
        curves: dict[str, list] = {}
        drops: dict[str, dict] = {}
        for (variant, modality), grp in mine[mine["modality"] != "-"].groupby(["variant", "modality"], sort=False):
            noisy = grp[grp["condition"] == "noise"].sort_values("noise")
            label = grp["label"].iloc[0]
            curves.setdefault(modality, []).append((label, noisy[f"{metric}_mean"].to_numpy(),
                                                    noisy[f"{metric}_std"].to_numpy()))
            dropped = grp[grp["condition"] == "drop"]
            if not dropped.empty:
                drops.setdefault(modality, {})[label] = (dropped[f"{metric}_mean"].iloc[0], dropped[f"{metric}_std"].iloc[0])
        title = f"{study} on {_where(frame, dataset)}: test {LABELS.get(metric, metric)}, mean \u00b1 std over seeds"
        paths += robustness_figure(curves, drops, levels, out / f"fig-robustness-{slug(study)}-{slug(dataset)}",
                                   title, metric)
    return paths
