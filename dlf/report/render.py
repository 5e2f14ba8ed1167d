"""Render: the plain table structures of :mod:`dlf.report.tables` -> Markdown, CSV, rich.

No pandas or MLflow here. Captions and footnotes are written once, against a small ``Style``
(the markup of one output format); LaTeX lives in :mod:`dlf.report.latex` and uses the same text.
"""
from __future__ import annotations

import csv
import dataclasses
import io
from dataclasses import dataclass
from typing import Callable

from dlf.report.paper import LABELS, PERCENT_METRICS, SOURCE_NOTES
from dlf.report.tables import Cell, Column, ColumnGroup, Row, Table

# Significance mark of a tested cell: the paper's own marks (*, ** and a dagger: where a quoted Table 1
# row comes from) are taken, so a test result never reads as a source.
SIG = "\u2021"


@dataclass(frozen=True)
class Style:
    pm: str
    sigma: str
    delta: str
    dash: str
    up: str
    down: str
    percent: str
    bold: Callable[[str], str]
    sup: Callable[[str], str]
    code: Callable[[str], str]
    escape: Callable[[str], str]
    signed: Callable[[str], str]  # '-1.23' as printed
    units: Callable[[str], str]  # '-2.4' -> '-2.4 sigma' as printed
    p_below: Callable[[float], str]  # 0.05 -> 'p < 0.05'
    compact_pm: Callable[[str, str], str]  # mean, std -> a narrow cell for wide tables


GAP_ROWS = ("gap", "gap_std")


MARKDOWN = Style(" \u00b1 ", "\u03c3", "\u0394", "-", "\u2191", "\u2193", "%",
                 bold=lambda s: f"**{s}**", sup=lambda m: m.replace("*", "\\*"),
                 code=lambda s: f"`{s}`", escape=lambda s: s.replace("|", "\\|").replace("*", "\\*"),
                 signed=lambda s: s, units=lambda u: f"{u}\u03c3", p_below=lambda a: f"p < {a:g}",
                 compact_pm=lambda m, s: f"{m} \u00b1 {s}")
PLAIN = dataclasses.replace(MARKDOWN, bold=lambda s: s, sup=lambda m: m, code=lambda s: s,
                            escape=lambda s: s)


def num(value: float | None, digits: int, st: Style) -> str:
    return st.dash if value is None else f"{value:.{digits}f}"


def gap_text(cell: Cell, st: Style, part: str = "both") -> str:
    """Ours minus paper in points and/or ('points' | 'units' | 'both') in units of our std."""
    points = None if cell.gap is None else st.signed(f"{cell.gap:+.{cell.decimals}f}")
    units = None if cell.gap_std is None else st.units(f"{cell.gap_std:+.1f}")
    if part == "points" or (part == "both" and units is None):
        return points or st.dash
    if part == "units":
        return units or st.dash
    return f"{points} ({units})" if points else st.dash


def cell_text(row: Row, col: Column, st: Style, compact: bool = False) -> str:
    cell = row.cells.get(col.key)
    if cell is None:
        return st.dash
    if row.kind in GAP_ROWS:
        return gap_text(cell, st, "points" if row.kind == "gap" else "units")
    if col.kind in ("gap", "gap_points"):
        return gap_text(cell, st, "both" if col.kind == "gap" else "points")
    if col.kind == "paper":
        return num(cell.paper, cell.decimals, st)
    text = num(cell.mean, cell.decimals, st)
    if row.kind == "measured" and cell.mean is not None and cell.n > 1 and cell.std is not None:
        std = num(cell.std, cell.decimals, st)
        text = st.compact_pm(text, std) if compact else text + st.pm + std
    if cell.best:
        text = st.bold(text)
    if cell.sig:
        text += st.sup(SIG)
    if cell.mark:
        text += st.sup(cell.mark)
    return text


def metric_title(metric: str, st: Style) -> str:
    if metric in PERCENT_METRICS:
        return f"{LABELS[metric]} ({st.percent})"
    return f"{LABELS[metric]} ({st.down if metric == 'mae' else st.up})"


def column_title(table: Table, group: ColumnGroup, col: Column, st: Style) -> str:
    if col.kind == "paper":
        return "Paper"
    if col.kind == "gap":
        return f"{st.delta} ({st.sigma})"
    if col.kind == "gap_points":
        return st.delta
    if table.kind == "table2" and table.paper_columns:
        return "Ours"
    return metric_title(col.metric, st)


def group_title(table: Table, group: ColumnGroup, st: Style) -> str | None:
    if group.title is None:
        return None
    return metric_title(group.columns[0].metric, st) if table.kind == "table2" else group.title


def row_label(row: Row, st: Style, latex: bool = False) -> str:
    label = row.latex if latex and row.latex else st.escape(row.label)
    if row.kind == "gap":
        label = f"{st.delta} to paper"
    elif row.kind == "gap_std":
        label = f"{st.delta} in std units"
    return label + (st.sup(row.mark) if row.mark else "")


def dataset_phrase(table: Table, st: Style) -> str:
    parts = []
    for d in table.datasets:
        if d.synthetic:
            parts.append(f"{d.display} (generated data, not CMU-{d.corpus.upper()})")
        else:
            parts.append(f"CMU-{d.display}" if d.display in ("MOSI", "MOSEI") else st.escape(d.display))
    return " and ".join(parts)


def seed_phrase(table: Table) -> str:
    ns = table.n_values
    if not ns:
        return "no seeds"
    if len(ns) > 1:
        return f"{ns[0]}-{ns[-1]} seeds" + (" (n per row)" if table.show_n else "")
    return "1 seed (no std)" if ns[0] == 1 else f"{ns[0]} seeds"


def caption(table: Table, st: Style) -> str:
    what = "Ablation study" if table.kind == "table2" else "Comparison"
    text = (f"{what} on {dataset_phrase(table, st)}, test set; ours: mean{st.pm}std over "
            f"{seed_phrase(table)}, std with ddof={table.ddof}. Study {st.code(table.study)}.")
    if table.kind == "table1" and any(b.kind == "reference" for b in table.blocks):
        text += " Upper rows: published results on the real CMU-MOSI/CMU-MOSEI, quoted from the DLF paper."
        if table.synthetic:
            text += " They are not comparable with our rows on generated data."
    return text


def block_title(table: Table, block, st: Style, short: bool = False) -> str | None:
    if table.kind == "table2":
        return block.title and st.escape(block.title)
    if block.kind == "reference":
        if short:
            return "quoted (real data)" if table.synthetic else "quoted"
        return ("Published on the real datasets (quoted from the DLF paper, not comparable)"
                if table.synthetic else "Reported in the DLF paper (quoted)")
    return "measured" if short else f"Measured in this study (mean{st.pm}std)"


def notes(table: Table, st: Style) -> list[str]:
    """Footnotes: only the ones that apply to what the table shows."""
    rows = [r for b in table.blocks for r in b.rows]
    cells = [c for r in rows if r.kind not in GAP_ROWS for c in r.cells.values()]
    out = []
    if any(c.best for c in cells):
        out.append("Bold: best per column (MAE: lower is better; all others higher).")
    tested = [c for r in rows if r.kind == "measured" for c in r.cells.values() if c.p is not None]
    if tested:
        out.append(f"{st.sup(SIG)}: differs from {st.escape(table.reference_label or 'the reference')} "
                   f"with Holm-adjusted {st.p_below(table.alpha)} (two-sided paired t-test over the seeds both "
                   "finished; Holm across the rows of this table, per metric).")
    untested = [c for r in rows if r.kind == "measured" and not r.is_reference
                for c in r.cells.values() if c.p is None and c.mean is not None and c.n > 0]
    if tested and untested:
        out.append("Cells without a test: fewer than two seeds in common with the reference, or the "
                   "same difference on every seed.")
    if table.paper_columns and table.kind == "table2":
        out.append(f"Paper: the DLF paper's number; {st.delta}: ours minus paper in points "
                   f"(in brackets, in units of our std {st.sigma}).")
    elif table.paper_columns:
        out.append(f"{st.delta} to paper: our mean minus the paper's number for the same method, in points "
                   f"(the CSV also has it in units of our std {st.sigma}).")
    used = {r.mark for r in rows if r.mark} | {c.mark for c in cells if c.mark}
    for mark in [m for m in SOURCE_NOTES if m in used]:  # a fixed order: the paper caption's
        out.append(f"{st.sup(mark)}: {SOURCE_NOTES.get(mark, 'see the paper')}.")
    if any(b.kind == "reference" for b in table.blocks):
        out.append(f"{st.dash}: not reported.")
    return out


def to_markdown(table: Table) -> str:
    st = MARKDOWN
    cols = [(g, c) for g in table.groups for c in g.columns]
    head = ["Method"] + [" ".join(filter(None, [group_title(table, g, st), column_title(table, g, c, st)]))
                         for g, c in cols]
    if table.show_n:
        head.insert(1, "n")
    lines = [f"**{table.name}.** {caption(table, st)}", "",
             "| " + " | ".join(head) + " |", "|:--" + "|--:" * (len(head) - 1) + "|"]
    for block in table.blocks:
        title = block_title(table, block, st)
        if title:
            lines.append(f"| *{title}* " + "| " * (len(head) - 1) + "|")
        for row in block.rows:
            cells = [row_label(row, st)] + [cell_text(row, c, st) for _, c in cols]
            if table.show_n:
                cells.insert(1, str(row.n) if row.kind == "measured" else "")
            lines.append("| " + " | ".join(cells) + " |")
    lines += [""] + [f"{n}  " for n in notes(table, st)]
    return "\n".join(lines).rstrip() + "\n"


CSV_FIELDS = ["study", "table", "block", "row", "kind", "variant", "dataset", "metric", "mean", "std",
              "n", "ci_low", "ci_high", "p", "p_holm", "significant", "best", "paper", "gap", "gap_std",
              "source_mark"]


def to_csv(table: Table) -> str:
    """One line per (row, metric) with every statistic, at full precision."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(CSV_FIELDS)
    f = lambda x, spec=".6f": "" if x is None else format(x, spec)  # noqa: E731
    for block in table.blocks:
        for row in block.rows:
            if row.kind in GAP_ROWS:
                continue
            for col in (c for c in table.columns if c.kind == "value"):
                cell = row.cells.get(col.key)
                if cell is None:
                    continue
                lo, hi = cell.ci or (None, None)
                out.writerow([table.study, table.name, block.title or "", row.label, row.kind,
                              row.variant or "", col.dataset, col.metric, f(cell.mean), f(cell.std),
                              cell.n if row.kind == "measured" else "", f(lo), f(hi), f(cell.p, ".6g"),
                              f(cell.p_holm, ".6g"), str(cell.sig).lower() if cell.p_holm is not None else "",
                              str(cell.best).lower(), f(cell.paper), f(cell.gap), f(cell.gap_std),
                              cell.mark or row.mark])
    return buf.getvalue()


def to_rich(table: Table, width: int = 120) -> list:
    """rich Tables for the terminal (same cells; bold where the paper would bold). Tables wider
    than ``width`` characters are split into parts of a few columns each."""
    per_part = max(2, (width - 28) // 16)  # a 'Method' column, then ~16 characters a cell
    cols = [(g, c) for g in table.groups for c in g.columns]
    parts = [cols[i:i + per_part] for i in range(0, len(cols), per_part)] or [[]]
    return [_rich_part(table, part, i == 0, i == len(parts) - 1) for i, part in enumerate(parts)]


def _rich_part(table: Table, cols: list, first: bool, last: bool):
    from rich.markup import escape
    from rich.table import Table as RichTable

    st = PLAIN
    rt = RichTable(title=f"{table.name}: {caption(table, st)}" if first else None, title_justify="left",
                   caption="\n".join(notes(table, st)) if last else None, caption_justify="left")
    rt.add_column("Method", no_wrap=True)
    if table.show_n:
        rt.add_column("n", justify="right")
    seen = set()
    for g, c in cols:  # the group title (dataset or metric) above its first column in this part
        top = None if id(g) in seen else group_title(table, g, st)
        seen.add(id(g))
        rt.add_column("\n".join(filter(None, [top, column_title(table, g, c, st)])), justify="right")
    for block in table.blocks:
        title = block_title(table, block, st, short=True)
        if title:
            rt.add_row(f"[italic]{escape(title)}[/italic]")
        for row in block.rows:
            n = [str(row.n) if row.kind == "measured" else ""] if table.show_n else []
            rt.add_row(escape(row_label(row, st)), *n, *[_rich_cell(row, c) for _, c in cols])
        rt.add_section()
    return rt


def _rich_cell(row: Row, col: Column) -> str:
    from rich.markup import escape

    text = escape(cell_text(row, col, PLAIN))
    cell = row.cells.get(col.key)
    return f"[bold]{text}[/bold]" if cell and cell.best and col.kind == "value" and row.kind not in GAP_ROWS else text
