"""``dlf-ablate report``: paper-style tables and figures from the tracked runs of studies."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def report(
    studies: Optional[List[str]] = typer.Argument(
        None, metavar="[STUDY]...", help="Study names or study YAMLs; none = every study in the store."),
    latex: bool = typer.Option(False, "--latex", help="Write booktabs .tex tables and a \\newcommand-style macro file per table."),
    markdown: bool = typer.Option(False, "--markdown", help="Write Markdown tables."),
    csv: bool = typer.Option(False, "--csv", help="Write CSV tables (every statistic) and runs.csv (one row per seed run)."),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Output folder (default reports/<study>/; with several studies, OUT/<study>/)."),
    tracking_uri: Optional[str] = typer.Option(
        None, "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the local store under $DLF_HOME)."),
    std_ddof: int = typer.Option(1, "--std-ddof", min=0, max=1, help="Std over seeds: 1 = sample std (default), 0 = MMSA's convention."),
    no_paper: bool = typer.Option(False, "--no-paper", help="Hide the paper's numbers and our gap to them."),
    alpha: float = typer.Option(0.05, "--alpha", min=0.0, max=1.0, help="Significance level of the Holm-corrected paired t-tests."),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="With a file format, also draw the bar chart and confusion matrix (PDF + PNG)."),
) -> None:
    """Render the paper's Table 1 / Table 2 (mean +- std over seeds, paired tests, gaps to the paper) from tracked runs.

    With no format flag the tables are printed to the terminal. Missing or failed runs are listed.
    """
    from rich.console import Console

    from dlf.report import ReportOptions, format_problems, make_report
    from dlf.report.render import to_rich

    console, err = Console(), Console(stderr=True)
    opts = ReportOptions(tuple(studies or ()), tracking_uri, latex, markdown, csv, figures, out,
                         std_ddof, not no_paper, alpha)
    reports = make_report(opts, progress=lambda msg: err.print(f"[dim]{msg}[/dim]"))
    for rep in reports:
        if not opts.writes_files:
            for table in rep.tables:
                for part in to_rich(table):
                    console.print(part)
                console.print()
        if not rep.tables:
            err.print(f"{rep.study}: no finished runs")
        for path in rep.written:
            console.print(f"wrote {path}", highlight=False)
        if rep.problems:
            err.print(f"{rep.study}: {len(rep.problems)} expected run(s) not finished (not in the tables):",
                      highlight=False)
            for line in format_problems(rep.problems):
                err.print(f"  {line}", highlight=False, markup=False)
        for line in dict.fromkeys(rep.warnings):
            err.print(f"warning: {line}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("report")(report)
