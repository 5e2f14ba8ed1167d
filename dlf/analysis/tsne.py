"""The paper's Figure 5: t-SNE of the fused representations of the test split, coloured by the seven
classes, one panel per variant, from one seed's tracked checkpoints.

Each run's checkpoint is evaluated again on the split (``features`` of its family: ``fused``, what its
output layer reads) and embedded on its own by scikit-learn's t-SNE (Barnes-Hut)
with fixed settings (``TSNE_SETTINGS``, perplexity capped for small splits), so a figure is the same
on every call.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from dlf.analysis.runs import Loader, RunRef, finished_runs
from dlf.errors import DLFError

__all__ = ["TSNE_SETTINGS", "Panel", "embed", "tsne_figures", "choose_variants"]

TSNE_SETTINGS = {"n_components": 2, "perplexity": 30.0, "init": "pca", "learning_rate": "auto",
                 "random_state": 0, "metric": "euclidean"}


@dataclass
class Panel:
    variant: str
    label: str
    points: np.ndarray  # (N, 2) t-SNE embedding
    classes: np.ndarray  # (N,) 0..6 (HN..HP)
    width: int  # the fused vector's width


def embed(x: np.ndarray) -> np.ndarray:
    """(N, d) -> (N, 2) with ``TSNE_SETTINGS``; perplexity at most (N - 1) / 3 (t-SNE needs N > 3 perplexity)."""
    from sklearn.manifold import TSNE

    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] < 5:
        raise DLFError(f"t-SNE needs at least 5 samples; the split has {x.shape[0]}")
    settings = {**TSNE_SETTINGS, "perplexity": min(TSNE_SETTINGS["perplexity"], (x.shape[0] - 1) / 3)}
    return TSNE(**settings).fit_transform(x)


def tsne_figures(uri: str, study: str, out_dir: Path, variants: Sequence[str] | None = None,
                 seed: int | None = None, split: str = "test", device: str = "cpu", data_root: Any = None,
                 say: Callable[[str], None] = lambda _m: None) -> tuple[list[Path], list[str]]:
    """Figure 5 per dataset of ``study``: ``fig-tsne-<study>-<dataset>-seed<S>.pdf/.png`` in ``out_dir``.
    Returns (paths written, warnings). Unknown variants or a seed without runs are refused in one line."""
    from dlf.analysis.plots import tsne_figure
    from dlf.report.tables import slug

    name, runs, seeds = finished_runs(uri, study)
    seed = seeds[0] if seed is None else int(seed)
    chosen = _choose(name, runs, variants, seed)
    paths, warnings = [], []
    with Loader(uri, device, data_root) as loader:
        for dataset, mine in chosen.items():
            panels = []
            for run in mine:
                say(f"t-SNE: {run.title}")
                panel = _panel(loader, run, split)
                if panel is None:
                    warnings.append(f"{run.title}: its model family exposes no features; left out of the t-SNE")
                else:
                    panels.append(panel)
            if panels:
                title = f"{name}: fused representations, t-SNE of the {split} split of {mine[0].where}, seed {seed}"
                stem = Path(out_dir) / f"fig-tsne-{slug(name)}-{slug(dataset)}-seed{seed}"
                paths += tsne_figure(panels, stem, title)
    return paths, warnings


def _choose(study: str, runs: list[RunRef], variants: Sequence[str] | None, seed: int) -> dict[str, list[RunRef]]:
    keep = choose_variants(study, [(r.variant, r.seed) for r in runs], variants, seed)
    out: dict[str, list[RunRef]] = {}
    for r in sorted((r for r in runs if r.seed == seed and r.variant in keep), key=lambda r: keep.index(r.variant)):
        out.setdefault(r.dataset, []).append(r)
    return out


def choose_variants(study: str, finished: Sequence[tuple[str, int]], variants: Sequence[str] | None,
                    seed: int) -> list[str]:
    """The panels' variants, in order: ``variants``, or every variant with a finished run at ``seed``
    (``finished``: (variant, seed) pairs in report order); one line for a seed or a variant without runs."""
    known = list(dict.fromkeys(v for v, s in finished if s == seed))
    if not known:
        have = sorted({s for _, s in finished})
        raise DLFError(f"--figure-seed {seed}: study {study!r} has no finished run with that seed; "
                       f"seeds with finished runs: {', '.join(map(str, have))}")
    unknown = [v for v in variants or () if v not in known]
    if unknown:
        raise DLFError(f"--figure-variants: {', '.join(unknown)} has no finished run at seed {seed} in study "
                       f"{study!r}; choose among {', '.join(known)}")
    return list(dict.fromkeys(variants)) if variants else known


def _panel(loader: Loader, run: RunRef, split: str) -> Panel | None:
    from dlf.analysis.plots import seven_class
    from dlf.models.registry import implementation
    from dlf.train.evaluation import SplitTensors, all_features

    model, cfg, ds = loader.model(run)
    if implementation(cfg.model.family).features is None:
        return None
    data = SplitTensors.from_split(ds.splits[split], cfg.model.text_encoder, next(model.parameters()).device)
    fused = all_features(model, data, cfg.train.eval_batch_size)["fused"]
    return Panel(run.variant, run.label, embed(fused), seven_class(data.labels_numpy()), int(fused.shape[1]))
