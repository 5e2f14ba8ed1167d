"""What ``report --figures`` adds to a study's report: the per-modality bars (the paper's Figure 1,
right; from the tracked test metrics) and the t-SNE of the fused representations (Figure 5; from the
tracked checkpoints, evaluated again)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from dlf.errors import DLFError

__all__ = ["analysis_figures", "modality_figures", "check_choice"]


def check_choice(study: str, runs: Any, slots: Sequence[tuple] | None, variants: Sequence[str],
                 seed: int | None, figures_dir: Path | None) -> None:
    """Refuse, before the report writes anything, a t-SNE seed or variant without finished runs and a
    --figures-dir that cannot be a folder."""
    import os

    from dlf.analysis.tsne import choose_variants

    if seed is None:
        seed = slots[0][2] if slots else min(int(s) for s in runs["seed"])
    choose_variants(study, list(zip(runs["variant"], (int(s) for s in runs["seed"]))), variants or None, int(seed))
    if figures_dir is not None:
        folder = Path(figures_dir)
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise DLFError(f"--figures-dir {figures_dir}: {folder} is not a writable folder; choose another path")


def analysis_figures(uri: str, study: str, runs: Any, out_dir: Path, variants: Sequence[str] = (),
                     seed: int | None = None, ddof: int = 1, data_root: Any = None,
                     say: Callable[[str], None] = lambda _m: None) -> tuple[list[Path], list[str]]:
    """(paths written, warnings) for one study; ``runs``: its finished seed runs as the report collected them."""
    from dlf.analysis.tsne import tsne_figures

    paths = modality_figures(runs, study, out_dir, ddof)
    more, warnings = tsne_figures(uri, study, out_dir, list(variants) or None, seed, data_root=data_root, say=say)
    return paths + more, warnings


def modality_figures(runs: Any, study: str, out_dir: Path, ddof: int = 1) -> list[Path]:
    """``fig-modalities-<study>-<dataset>.pdf/.png`` per dataset whose runs include ``only_*`` variants:
    those and the reference model (``full``), mean +- std over seeds of Acc-2, F1, Acc-7 and MAE."""
    from dlf.analysis.plots import MODALITY_METRICS, modality_figure
    from dlf.analysis.runs import display_name
    from dlf.report.aggregate import in_points, reference_variant, summarize
    from dlf.report.tables import slug

    paths = []
    for dataset, mine in runs.groupby("dataset", sort=False):
        ref = reference_variant(mine)
        only = sorted({v for v in mine["variant"] if str(v).startswith("only_")},
                      key=lambda v: "lav".find(v[len("only_"):]) % 10)
        if not only:
            continue
        keep = mine[mine["variant"].isin(only + ([ref] if ref else []))]
        metrics = [m for m in MODALITY_METRICS if f"test_{m}" in keep.columns]
        summary = summarize(in_points(keep), metrics, ddof).to_dict("records")
        order = ([ref] if ref else []) + only
        summary.sort(key=lambda row: order.index(row["variant"]))
        where = display_name(dataset, str(mine["corpus"].iloc[0] or ""), bool(mine["synthetic"].iloc[0]))
        seeds = ", ".join(str(s) for s in sorted(mine["seed"].unique()))
        title = f"{study}: each modality alone on {where}, test split, mean \u00b1 std over seeds {seeds}"
        paths += modality_figure(summary, Path(out_dir) / f"fig-modalities-{slug(study)}-{slug(dataset)}",
                                 title, metrics)
    return paths
