"""Reports: tracked runs -> paper-style tables (LaTeX, Markdown, CSV, terminal) and figures.

collect (MLflow -> tidy seed rows; the only MLflow code) -> aggregate (pandas/scipy statistics)
-> tables (layout as plain structures) -> render / latex (text) and figures (matplotlib).
Imports stay inside functions: ``dlf.report.render`` must load without pandas or MLflow.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from dlf.errors import DLFError


@dataclass(frozen=True)
class ReportOptions:
    studies: tuple[str, ...] = ()  # names or study YAMLs; empty = every study in the store
    tracking_uri: str | None = None
    latex: bool = False
    markdown: bool = False
    csv: bool = False
    figures: bool = True  # written with any file format
    out: Path | None = None  # default reports/<study>/; with several studies, <out>/<study>/
    ddof: int = 1
    paper: bool = True  # the paper's numbers and our gap to them, for real MOSI/MOSEI rows
    alpha: float = 0.05
    quoted: bool = False  # Table 1: the paper's rows of the methods we trained too (hidden by default)
    analysis: bool = False  # also Figure 5 (t-SNE, from the checkpoints) and Figure 1 right (per modality)
    figures_dir: Path | None = None  # where those go (default: the study's output folder)
    figure_variants: tuple[str, ...] = ()  # t-SNE panels (default: every variant with a finished run)
    figure_seed: int | None = None  # the seed whose checkpoints the t-SNE reads (default: the study's first)
    data_root: Path | None = None  # for real corpora whose file moved since training

    @property
    def writes_files(self) -> bool:
        return self.latex or self.markdown or self.csv


@dataclass
class StudyReport:
    study: str
    tables: list  # dlf.report.tables.Table
    problems: list[dict]  # {variant, dataset, seed, status, run_id}: missing / failed / running
    finished: int
    out_dir: Path | None = None
    written: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def default_tracking_uri(explicit: str | None = None) -> str:
    """The flag, then $MLFLOW_TRACKING_URI, then the local store (the tracking module's rules)."""
    from dlf.run.tracking import resolve_tracking_uri

    return resolve_tracking_uri(explicit)


def make_report(opts: ReportOptions, progress: Callable[[str], None] | None = None) -> list[StudyReport]:
    """Collect, aggregate and lay out every requested study; write the files asked for."""
    from dlf.report.aggregate import aggregate
    from dlf.report.collect import collect, study_slots
    from dlf.report.paper import load_paper_tables
    from dlf.report.tables import build_tables

    say = progress or (lambda _msg: None)
    uri = default_tracking_uri(opts.tracking_uri)
    slots = dict(study_slots(arg) for arg in opts.studies)
    say(f"reading runs from {uri}")
    figures = opts.writes_files and opts.figures  # only the confusion matrix needs predictions
    got = collect(uri, list(slots) or None, {k: v for k, v in slots.items() if v is not None},
                  predictions_for=None if figures else ())
    finished = got.finished
    if finished.empty:
        which = ", ".join(slots) if slots else "any study"
        failed = f" ({len(got.problems)} expected runs missing or failed)" if len(got.problems) else ""
        raise DLFError(f"no finished runs for {which} in {uri}{failed}; run `dlf-ablate run STUDY.yaml` "
                       "first or pass --tracking-uri")
    paper = load_paper_tables()
    frame = aggregate(finished, ddof=opts.ddof, alpha=opts.alpha, paper=paper)
    order = {name: list(dict.fromkeys(d for _, d, _ in s)) for name, s in slots.items() if s}
    tables = build_tables(frame, paper, opts.paper, opts.ddof, opts.alpha, order, opts.quoted)
    if opts.analysis:  # its choices refused before any file is written
        from dlf.analysis.report_figures import check_choice

        for study, mine in finished.groupby("study", sort=False):
            check_choice(study, mine, slots.get(study), opts.figure_variants, opts.figure_seed, opts.figures_dir)
    reports = []
    for study in dict.fromkeys(list(slots) or list(finished["study"])):
        mine = got.problems[got.problems["study"] == study].drop(columns="study")
        rep = StudyReport(study, [t for t in tables if t.study == study],
                          mine.astype(object).where(mine.notna(), None).to_dict("records"),
                          int((finished["study"] == study).sum()),
                          warnings=[w for s, w in got.warnings if s == study])
        if opts.writes_files and rep.tables:
            rep.out_dir = _out_dir(opts, study)
            say(f"writing {study} to {rep.out_dir}")
            rep.written = write_study(rep, opts, finished[finished["study"] == study],
                                      got.predictions[got.predictions["study"] == study])
        if opts.analysis and rep.tables:
            rep.written += _analysis(rep, opts, uri, finished[finished["study"] == study], say)
        reports.append(rep)
    return reports


def _analysis(rep: StudyReport, opts: ReportOptions, uri: str, runs, say) -> list[Path]:
    from dlf.analysis.report_figures import analysis_figures

    out = opts.figures_dir or _out_dir(opts, rep.study)
    paths, warnings = analysis_figures(uri, rep.study, runs, out, opts.figure_variants, opts.figure_seed,
                                       opts.ddof, opts.data_root, say)
    rep.warnings += warnings
    return paths


def _out_dir(opts: ReportOptions, study: str) -> Path:
    if opts.out is None:
        return Path("reports") / study
    return Path(opts.out) / study if len(opts.studies) != 1 else Path(opts.out)


def write_study(rep: StudyReport, opts: ReportOptions, runs, predictions) -> list[Path]:
    """Write one study's tables (and figures) into ``rep.out_dir``; returns the paths written."""
    from dlf.report import latex, render

    out, written = rep.out_dir, []
    for table in rep.tables:
        if opts.latex:
            written += [_write(out / f"{table.name}{suffix}", text)
                        for suffix, text in latex.latex_files(table).items()]
        if opts.markdown:
            written.append(_write(out / f"{table.name}.md", render.to_markdown(table)))
        if opts.csv:
            written.append(_write(out / f"{table.name}.csv", render.to_csv(table)))
    if opts.csv:
        written.append(_write(out / "runs.csv", runs.drop(columns="start_time").to_csv(index=False)))
    if opts.figures:
        written += _figures(rep, predictions)
    return written


def _figures(rep: StudyReport, predictions) -> list[Path]:
    from dlf.report.figures import ablation_chart, confusion_figure
    from dlf.report.tables import slug

    paths = []
    for table in rep.tables:
        if table.kind == "table2":
            paths += ablation_chart(table, rep.out_dir / f"fig-ablation-{slug(table.datasets[0].name)}")
        else:
            for info in table.datasets:
                mine = predictions[predictions["dataset"] == info.name]
                if mine.empty:
                    continue
                where = f"{info.display} (generated data)" if info.synthetic else info.display
                title = (f"{table.reference_label} on {where}: test predictions pooled over "
                         f"{mine['seed'].nunique()} seed(s)")
                paths += confusion_figure(mine["label"].to_numpy(), mine["pred"].to_numpy(),
                                          rep.out_dir / f"fig-confusion-{slug(info.name)}", title)
    return paths


def _write(path: Path, text: str) -> Path:
    """Write via a temporary file and rename, so an interrupted report never leaves half a file."""
    from dlf.data.fingerprint import atomic_write

    data = text.encode("utf-8")
    return atomic_write(path, lambda fh: fh.write(data))


def format_problems(problems: Sequence[dict], limit: int = 12) -> list[str]:
    """Human lines for the runs a table is missing: 'wo_lr@synthetic-mosi#2: failed'."""
    lines = [f"{p['variant']}@{p['dataset']}#{p['seed']}: {p['status']}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"... and {len(problems) - limit} more")
    return lines
