"""``dlf-ablate robustness``: a study's trained models with a modality dropped or under noise."""
from __future__ import annotations

from pathlib import Path

import typer

from dlf.cli.options import DataRootOpt, DeviceOpt, TrackingUriOpt


def register(app: typer.Typer) -> None:
    app.command("robustness")(robustness)


def robustness(
    study: str = typer.Argument(..., help="Study name or study YAML whose finished runs to evaluate."),
    out: Path = typer.Option(..., "--out", help="Folder for the table (CSV, Markdown, LaTeX), the scores and the curves."),
    modality: str = typer.Option("l,a,v", "--modality", help="Comma-separated modalities to perturb, one at a time."),
    noise: str = typer.Option("0,0.25,0.5,1.0", "--noise", help="Comma-separated Gaussian noise strengths, in "
                              "units of each feature's std on the training split (0 = clean)."),
    drop: bool = typer.Option(False, "--drop", help="Also evaluate each listed modality zeroed."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="Seed of the noise draws (the same draws "
                             "for every run)."),
    metric: str = typer.Option("acc2", "--metric", help="Metric whose noise curve the robustness scores read."),
    std_ddof: int = typer.Option(1, "--std-ddof", min=0, max=1, help="Std over seeds: 1 = sample std, 0 = population."),
    tracking_uri: TrackingUriOpt = None,
    data_root: DataRootOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Test metrics of every finished run with each modality dropped or noised; tracked in MLflow as a
    nested run per seed run, written as tables, MultiBench robustness scores and curves (mean +- std over seeds)."""
    from rich.console import Console

    from dlf.analysis.robustness import RobustnessOptions, run_robustness

    err = Console(stderr=True)
    opts = RobustnessOptions(study, out, modality, noise, drop, seed, tracking_uri, metric, std_ddof, device, data_root)
    with err.status("evaluating") as status:
        result = run_robustness(opts, say=status.update)
    if result.reused:
        err.print(f"{result.reused} condition(s) read back from MLflow (tracked before)", highlight=False)
    for path in result.written:
        typer.echo(f"wrote {path}")
