"""Aggregate: tidy seed runs -> one row per (study, dataset, variant) with the statistics.

Pure pandas/scipy. Percent metrics are converted to points (x100) first, so means, stds, CIs and
gaps are all in the units the paper prints. Per metric ``m`` the summary has ``m_mean``,
``m_std`` (ddof as asked), ``m_n``, ``m_ci_low``/``m_ci_high`` (95 % t-interval, always from the
ddof=1 sample std), ``m_p``/``m_pairs`` (paired t-test against the reference variant over the
seeds both finished), ``m_p_holm`` (Holm across the rows of one study x dataset), ``m_sig``,
``m_best`` and, for real MOSI/MOSEI rows, ``m_paper``/``m_gap``/``m_gap_std``.
"""
from __future__ import annotations

import math
import warnings
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from dlf.report.paper import DIRECTIONS, FULL_VARIANT, METRICS, PAPER_CORPORA, PERCENT_METRICS, \
    PaperTables, decimals

KEYS = ["study", "dataset", "variant"]
META = ["corpus", "synthetic", "group", "label", "latex", "order"]


def available_metrics(runs: pd.DataFrame) -> list[str]:
    return [m for m in METRICS if f"test_{m}" in runs.columns]


def in_points(runs: pd.DataFrame) -> pd.DataFrame:
    """``test_<m>`` -> column ``m`` in display units (percent metrics x100)."""
    out = runs[KEYS + META + ["seed"]].copy()
    for m in available_metrics(runs):
        out[m] = runs[f"test_{m}"].astype(float) * (100.0 if m in PERCENT_METRICS else 1.0)
    return out


def reference_variant(runs: pd.DataFrame) -> str | None:
    """The row every ablation is tested against: ``full``, else the only ungrouped variant."""
    names = set(runs["variant"])
    if FULL_VARIANT in names:
        return FULL_VARIANT
    ungrouped = sorted(set(runs.loc[runs["group"].isna(), "variant"]))
    return ungrouped[0] if len(ungrouped) == 1 else None


def summarize(points: pd.DataFrame, metrics: Sequence[str], ddof: int = 1) -> pd.DataFrame:
    """Mean, std (``ddof``), n and 95 % CI of each metric per (study, dataset, variant)."""
    rows = []
    for key, grp in points.groupby(KEYS, sort=False):
        row = dict(zip(KEYS, key)) | {c: grp[c].iloc[0] for c in META}
        row["n"] = grp["seed"].nunique()
        row["seeds"] = ",".join(str(s) for s in sorted(grp["seed"].unique()))
        for m in metrics:
            row.update(_describe(grp[m].dropna().to_numpy(), ddof, m))
        rows.append(row)
    return pd.DataFrame(rows)


def _describe(values: np.ndarray, ddof: int, m: str) -> dict:
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    std = float(values.std(ddof=ddof)) if n > ddof else math.nan
    half = math.nan
    if n >= 2:  # the CI always uses the unbiased sample std, whatever ddof the table shows
        half = float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n))
    return {f"{m}_mean": mean, f"{m}_std": std, f"{m}_n": n,
            f"{m}_ci_low": mean - half, f"{m}_ci_high": mean + half}


def paired_tests(points: pd.DataFrame, reference: str | None, metrics: Sequence[str]) -> pd.DataFrame:
    """Two-sided paired t-test (scipy ttest_rel) of each variant against ``reference``.

    Pairs are the seeds both runs finished; fewer than two pairs gives p = NaN (no test).
    """
    rows = []
    for (study, dataset), grp in points.groupby(["study", "dataset"], sort=False):
        ref = grp[grp["variant"] == reference].set_index("seed")
        for variant, mine in grp.groupby("variant", sort=False):
            row = {"study": study, "dataset": dataset, "variant": variant}
            for m in metrics:
                row.update(_paired(mine.set_index("seed")[m], ref[m] if not ref.empty else None,
                                   m, variant == reference))
            rows.append(row)
    return pd.DataFrame(rows, columns=KEYS + [f"{m}_{s}" for m in metrics for s in ("p", "pairs")])


def _paired(values: pd.Series, ref: pd.Series | None, m: str, is_ref: bool) -> dict:
    if ref is None or is_ref:
        return {f"{m}_p": math.nan, f"{m}_pairs": 0}
    both = pd.concat([values.rename("x"), ref.rename("y")], axis=1, join="inner").dropna()
    if len(both) < 2:
        return {f"{m}_p": math.nan, f"{m}_pairs": len(both)}
    diff = (both["x"] - both["y"]).to_numpy()
    if np.allclose(diff, 0.0, rtol=0.0, atol=1e-9):  # identical on every seed: no evidence of a difference
        return {f"{m}_p": 1.0, f"{m}_pairs": len(both)}
    if np.ptp(diff) <= 1e-9 * max(1.0, float(np.abs(diff).max())):
        # the same nonzero difference on every seed: t is infinite and scipy's p = 0 says nothing
        # (common with a few seeds and a discrete metric), so the row is left untested
        return {f"{m}_p": math.nan, f"{m}_pairs": len(both)}
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # near-constant differences: scipy warns, p stays valid
        p = float(stats.ttest_rel(both["x"], both["y"]).pvalue)
    return {f"{m}_p": p, f"{m}_pairs": len(both)}


def holm(pvalues: Iterable[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values; NaN entries stay NaN and do not count in m.

    Sorted ascending, p_(i) becomes max_{j<=i} min(1, (m - j + 1) p_(j)) (1-based i, j).
    """
    p = [float(x) for x in pvalues]
    valid = sorted((x, i) for i, x in enumerate(p) if not math.isnan(x))
    out, running, m = [math.nan] * len(p), 0.0, len(valid)
    for rank, (x, i) in enumerate(valid):
        running = max(running, min(1.0, (m - rank) * x))
        out[i] = running
    return out


def add_holm(frame: pd.DataFrame, metrics: Sequence[str], alpha: float) -> pd.DataFrame:
    """Holm-correct each metric's p-values across the rows of one study x dataset table."""
    frame = frame.copy()
    for m in metrics:
        frame[f"{m}_p_holm"] = math.nan
        for _, idx in frame.groupby(["study", "dataset"], sort=False).groups.items():
            frame.loc[idx, f"{m}_p_holm"] = holm(frame.loc[idx, f"{m}_p"])
        frame[f"{m}_sig"] = frame[f"{m}_p_holm"] < alpha
    return frame


def add_paper(frame: pd.DataFrame, paper: PaperTables, metrics: Sequence[str]) -> pd.DataFrame:
    """Paper number and reproduction gap (points and std units) for real MOSI/MOSEI rows only. The
    reference row is our DLF model whatever its variant is called (table1's BERT row is ``dlf``), so it
    is compared with the paper's DLF numbers, as ``full`` is."""
    frame = frame.copy()
    real = ~frame["synthetic"].astype(bool) & frame["corpus"].isin(PAPER_CORPORA)
    names = frame["variant"].where(~frame["is_reference"].astype(bool), FULL_VARIANT)
    for m in metrics:
        ref = [paper.value(v, f, m, label) if ok else None
               for v, f, label, ok in zip(names, frame["corpus"], frame["label"], real)]
        frame[f"{m}_paper"] = pd.to_numeric(pd.Series(ref, index=frame.index, dtype=object))
        frame[f"{m}_gap"] = frame[f"{m}_mean"] - frame[f"{m}_paper"]
        std = frame[f"{m}_std"].where(frame[f"{m}_std"] > 0)
        frame[f"{m}_gap_std"] = frame[f"{m}_gap"] / std
    return frame


def best_flags(values: Sequence[float | None], metric: str) -> list[bool]:
    """Which values are best by the metric's direction, compared at the printed precision (cells
    that print equal are all best). Fewer than two values compete: nothing is best."""
    rounded = [None if v is None or math.isnan(v) else round(float(v), decimals(metric)) for v in values]
    present = [v for v in rounded if v is not None]
    if len(present) < 2:
        return [False] * len(values)
    best = min(present) if DIRECTIONS[metric] == "min" else max(present)
    return [v is not None and v == best for v in rounded]


def mark_best(frame: pd.DataFrame, metrics: Sequence[str], by: Sequence[str] = ("study", "dataset"),
              value: str = "{m}_mean") -> pd.DataFrame:
    """``m_best`` per column (metric) within each ``by`` group, by :func:`best_flags`."""
    frame = frame.copy()
    for m in metrics:
        frame[f"{m}_best"] = False
        for _, idx in frame.groupby(list(by), sort=False).groups.items():
            frame.loc[idx, f"{m}_best"] = best_flags(frame.loc[idx, value.format(m=m)].tolist(), m)
        frame[f"{m}_best"] = frame[f"{m}_best"].astype(bool)
    return frame


def aggregate(runs: pd.DataFrame, ddof: int = 1, alpha: float = 0.05,
              paper: PaperTables | None = None, reference: str | None = None) -> pd.DataFrame:
    """Finished seed runs (collect's tidy rows) -> the statistics frame described above."""
    if ddof not in (0, 1):
        raise ValueError("ddof must be 0 or 1")
    points = in_points(runs)
    metrics = available_metrics(runs)
    reference = reference or reference_variant(runs)
    frame = summarize(points, metrics, ddof).merge(paired_tests(points, reference, metrics), on=KEYS)
    frame["is_reference"] = frame["variant"] == reference
    frame = add_holm(frame, metrics, alpha)
    frame = mark_best(frame, metrics)
    if paper is not None:
        frame = add_paper(frame, paper, metrics)
    return frame
