"""``dlf-ablate report``: paper-style tables and figures from the tracked runs of studies."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dlf.cli.options import DataRootOpt, TrackingUriOpt

StudiesArg = typer.Argument(None, metavar="[STUDY]...",
                            help="Study names or study YAMLs; none = every study in the tracking store.")
OutOpt = typer.Option(None, "--out", help="Output folder (default: reports/<study>/ under the current "
                      "directory; with several studies, OUT/<study>/).")


def register(app: typer.Typer) -> None:
    app.command("report")(report)


def report(
    studies: Optional[list[str]] = StudiesArg,
    latex: bool = typer.Option(False, "--latex", help="Write booktabs .tex tables, each with a macro file "
                               "(one \\providecommand per number) for citing single results; on real data "
                               "Table 2's paper numbers and gaps go to a companion -paper.tex."),
    markdown: bool = typer.Option(False, "--markdown", help="Write Markdown tables."),
    csv: bool = typer.Option(False, "--csv", help="Write CSV tables (every statistic, one line per cell) "
                             "and runs.csv (one line per seed run)."),
    out: Optional[Path] = OutOpt,
    tracking_uri: TrackingUriOpt = None,
    std_ddof: int = typer.Option(1, "--std-ddof", min=0, max=1, help="Std over seeds: 1 = sample std "
                                 "(default), 0 = population std (MMSA's convention)."),
    no_paper: bool = typer.Option(False, "--no-paper", help="Hide the paper's numbers and our gap to them "
                                  "(shown for real MOSI/MOSEI runs only)."),
    alpha: float = typer.Option(0.05, "--alpha", min=0.0, max=1.0, help="Significance level of the paired "
                                "t-tests against the full model (Holm-corrected)."),
    figures: Optional[bool] = typer.Option(
        None, "--figures/--no-figures", show_default=False, help="Default: with a file format, also draw the "
        "ablation bar chart and the 7-class confusion matrix (PDF and PNG). --figures: also, with or without a "
        "file format, the t-SNE of the fused test representations per variant (the paper's Figure 5; evaluates "
        "the tracked checkpoints again) and the per-modality bars of the only_* variants (Figure 1, right)."),
    figures_dir: Optional[Path] = typer.Option(None, "--figures-dir", help="Folder for the --figures figures "
                                               "(default: the --out folder)."),
    figure_variants: Optional[str] = typer.Option(None, "--figure-variants", help="Comma-separated variants "
                                                  "for the t-SNE panels, e.g. full,wo_fdm (default: every "
                                                  "variant with a finished run)."),
    figure_seed: Optional[int] = typer.Option(None, "--figure-seed", help="Seed whose checkpoints the t-SNE "
                                              "reads (default: the study's first seed)."),
    data_root: DataRootOpt = None,
    quoted: bool = typer.Option(False, "--quoted", help="Table 1: also show the paper's rows of the methods "
                                "trained here (by default only untrained methods, e.g. PMR, are quoted)."),
) -> None:
    """Paper-style Table 1 / Table 2 from tracked runs: mean +- std over seeds, paired tests, gaps to the paper.

    With no format flag the tables are printed to the terminal. Missing or failed runs are listed.
    """
    from rich.console import Console

    from dlf.report import ReportOptions, format_problems, make_report
    from dlf.report.render import to_rich

    console, err = Console(), Console(stderr=True)
    variants = tuple(v.strip() for v in (figure_variants or "").split(",") if v.strip())
    opts = ReportOptions(tuple(studies or ()), tracking_uri, latex, markdown, csv, figures is not False, out,
                         std_ddof, not no_paper, alpha, quoted, analysis=bool(figures), figures_dir=figures_dir,
                         figure_variants=variants, figure_seed=figure_seed, data_root=data_root)
    with err.status("reading the tracked runs") as status:  # transient: gone once done
        reports = make_report(opts, progress=status.update)
    for rep in reports:
        for table in rep.tables if not opts.writes_files else ():
            for part in to_rich(table, console.width):
                console.print(part)
            console.print()
        if not rep.tables:
            err.print(f"{rep.study}: no finished runs", highlight=False, markup=False)
        for path in rep.written:
            console.print(f"wrote {path}", highlight=False, markup=False)
        if rep.problems:
            err.print(f"{rep.study}: {len(rep.problems)} expected run(s) not finished (left out of the tables):",
                      highlight=False, markup=False)
            for line in format_problems(rep.problems):
                err.print(f"  {line}", highlight=False, markup=False)
        for line in rep.warnings:
            err.print(f"warning: {line}", highlight=False, markup=False)
