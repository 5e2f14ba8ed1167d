"""LaTeX output: a booktabs table per :class:`~dlf.report.tables.Table` and its macro file.

The .tex needs only ``\\usepackage{booktabs}``. Macro names (so a paper can cite one number):

    \\DLF + Study + Variant + Dataset + Metric [+ Suffix]

each part in CamelCase from its name, split at every non-letter, digits spelled out
(``table2`` -> ``TableTwo``, ``wo_lr`` -> ``WoLr``, ``synthetic-mosi`` -> ``SyntheticMosi``,
``acc7`` -> ``AccSeven``), e.g. ``\\DLFTableTwoFullMosiAccSeven``. Suffix: none = mean,
``Std``, ``Pm`` (mean $\\pm$ std as in the table), ``PHolm`` (Holm-adjusted p against the reference,
tested rows only), ``Paper`` and ``Gap`` (real data only); per row ``...DatasetN`` = seeds.
"""
from __future__ import annotations

import dataclasses
import re

from dlf.report.render import (Style, block_title, caption, cell_text, column_title, dataset_phrase,
                               group_title, notes, num, row_label, seed_phrase)
from dlf.report.paper import LABELS
from dlf.report.tables import Column, ColumnGroup, Table

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
            "<": r"\textless{}", ">": r"\textgreater{}", "\u2020": r"\dag{}",
            "\u2021": r"\ddag{}"}
_MARKS = {"*": "*", "**": "**", "\u2020": r"\dagger", "\u2021": r"\ddagger"}
_DIGITS = "Zero One Two Three Four Five Six Seven Eight Nine".split()


def escape(text: str) -> str:
    """Plain text -> LaTeX source (special characters escaped)."""
    return "".join(_SPECIAL.get(ch, ch) for ch in text)


LATEX = Style(r" $\pm$ ", r"$\sigma$", r"$\Delta$", "--", r"$\uparrow$", r"$\downarrow$", r"\%",
              bold=lambda s: f"\\textbf{{{s}}}", sup=lambda m: f"$^{{{_MARKS.get(m, m)}}}$",
              code=lambda s: f"\\texttt{{{escape(s)}}}", escape=escape, signed=lambda s: f"${s}$",
              units=lambda u: f"${u}\\sigma$", p_below=lambda a: f"$p<{a:g}$",
              compact_pm=lambda m, s: f"{m}$_{{\\pm {s}}}$")


PAPER_SUFFIX = "-paper"  # the companion of a Table 2 on real data: the paper's numbers, our gaps


def latex_files(table: Table) -> dict[str, str]:
    """File-name suffix -> LaTeX text for one table: ``.tex``, the companion ``-paper.tex`` (a Table 2
    with the paper's numbers beside it) and ``-macros.tex``."""
    files = {".tex": to_latex(table)}
    if _has_companion(table):
        files[PAPER_SUFFIX + ".tex"] = to_latex_paper(table)
    files["-macros.tex"] = to_macros(table)
    return files


def _has_companion(table: Table) -> bool:
    return table.kind == "table2" and table.paper_columns


def to_latex(table: Table) -> str:
    """The table as a float with caption, label, booktabs rules and footnotes.

    Every table fits the text width of a plain article (345pt), cells being compact
    (mean$_{\\pm std}$). Table 2 keeps the paper's layout (four metrics, mean +- std); the paper's
    numbers and our gaps to them go to a companion table (:func:`to_latex_paper`), since all of them
    side by side (13 columns) cannot fit. Table 1 stacks its datasets, one panel of the six metrics
    per dataset under a single header, instead of 13 columns side by side.
    """
    if not _has_companion(table):
        return _float(table, caption(table, LATEX), notes(table, LATEX))
    main = dataclasses.replace(table, groups=[ColumnGroup(None, [c for c in table.columns if c.kind == "value"])],
                               paper_columns=False)
    see = f"The DLF paper's numbers and our gaps to them: Table~\\ref{{{_tag(table, PAPER_SUFFIX)}}}."
    return _float(main, caption(main, LATEX), notes(main, LATEX) + [see])


def to_latex_paper(table: Table) -> str:
    """A Table 2's companion: per metric the paper's number and our mean minus it (in points), for
    the rows the paper reports (its Table 2; the reference model's from its Table 1)."""
    st = LATEX
    value = [c for c in table.columns if c.kind == "value"]
    groups = [ColumnGroup(LABELS[c.metric], [Column(c.dataset, c.metric, "paper"),
                                             Column(c.dataset, c.metric, "gap_points")]) for c in value]
    blocks = [dataclasses.replace(b, rows=[r for r in b.rows if _in_paper(r, value)]) for b in table.blocks]
    view = dataclasses.replace(table, name=table.name + PAPER_SUFFIX, groups=groups, show_n=False,
                               blocks=[b for b in blocks if b.rows])
    text = (f"Ablation study on {dataset_phrase(view, st)}, test set, beside the DLF paper: its number (Paper) "
            f"and our mean over {seed_phrase(view)} minus it ({st.delta}; our mean{st.pm}std in "
            f"Table~\\ref{{{_tag(table)}}}). Study {st.code(table.study)}.")
    foot = [(f"Paper: the DLF paper's number; {st.delta}: our mean minus it, in points (the CSV also has it "
             f"in units of our std {st.sigma}).")]
    if sum(len(b.rows) for b in view.blocks) < sum(len(b.rows) for b in table.blocks):
        foot.append("Rows the paper does not report are left out.")
    if any(r.cells.get(c.key) is None or r.cells[c.key].paper is None for b in view.blocks for r in b.rows
           for c in value):
        foot.append(f"{st.dash}: not reported.")
    return _float(view, text, foot)


def _in_paper(row, value_columns) -> bool:
    return any(row.cells.get(c.key) is not None and row.cells[c.key].paper is not None for c in value_columns)


def _tag(table: Table, suffix: str = "") -> str:
    return f"tab:dlf-{_label(table.study)}-{_label(table.name + suffix)}"


def _float(table: Table, caption_text: str, foot: list[str]) -> str:
    """The float of ``table`` (already laid out): wide tables (more than 7 columns) span the page in
    a two-column document; Table 1 stacks its datasets under a single header."""
    st = LATEX
    stacked = table.kind == "table1"
    cols = [(g, c) for g in (table.groups[:1] if stacked else table.groups) for c in g.columns]
    width = 1 + int(table.show_n) + len(cols)
    wide = width > 7 and not stacked
    env = "table*" if wide else "table"
    lines = [f"% Generated by dlf-ablate report from study '{table.study}'. Needs \\usepackage{{booktabs}}.",
             f"\\begin{{{env}}}[htbp]", "  \\centering", "  \\scriptsize" if stacked else "  \\footnotesize",
             f"  \\setlength{{\\tabcolsep}}{{{1 if stacked else 4}pt}}"]
    tabular, spec = _tabular(f"l{'r' if table.show_n else ''}{'c' * len(cols)}", stacked)
    lines += [f"  \\caption{{{caption_text}}}", f"  \\label{{{_tag(table)}}}",
              f"  \\begin{{{tabular}}}{spec}", "    \\toprule"]
    if stacked:
        lines += _header(table, st, with_groups=False)
        for g in table.groups:
            title = f"\\multicolumn{{{width}}}{{c}}{{\\textbf{{{group_title(table, g, st)}}}}} \\\\"
            lines += ["    \\midrule", f"    {title}"]
            lines += _blocks(table, [(g, c) for c in g.columns], width, f"    \\cmidrule(lr){{1-{width}}}")
    else:
        lines += _header(table, st)
        lines += _blocks(table, cols, width, "    \\midrule", first_rule=True)
    lines += ["    \\bottomrule", f"  \\end{{{tabular}}}"]
    if foot:
        lines += ["  \\par\\smallskip", "  \\parbox{\\linewidth}{\\footnotesize"]
        lines += [f"    {n}" + (" \\\\" if i < len(foot) - 1 else "}") for i, n in enumerate(foot)]
    lines.append(f"\\end{{{env}}}")
    return "\n".join(lines) + "\n"


def _tabular(columns: str, full_width: bool) -> tuple[str, str]:
    """(environment, its arguments). A full-width table spans the line: its columns spread out from
    their (narrow) natural widths, with no padding at the outer edges."""
    if full_width:
        return "tabular*", f"{{\\linewidth}}{{@{{\\extracolsep{{\\fill}}}}{columns}@{{}}}}"
    return "tabular", f"{{{columns}}}"


def _blocks(table: Table, cols: list, width: int, rule: str, first_rule: bool = False) -> list[str]:
    """The rows of every block over ``cols``, each block under ``rule`` (the first one too with
    ``first_rule``) and its italic title. Cells are compact (mean$_{\\pm std}$): long row labels fit."""
    st, lines = LATEX, []
    for i, block in enumerate(table.blocks):
        if i or first_rule:
            lines.append(rule)
        title = block_title(table, block, st)
        if title:
            lines.append(f"    \\multicolumn{{{width}}}{{l}}{{\\textit{{{title}}}}} \\\\")
        for row in block.rows:
            cells = [row_label(row, st, latex=True)] + [cell_text(row, c, st, compact=True) for _, c in cols]
            if table.show_n:
                cells.insert(1, str(row.n) if row.kind == "measured" else "")
            lines.append("    " + " & ".join(cells) + " \\\\")
    return lines


def _header(table: Table, st: Style, with_groups: bool = True) -> list[str]:
    lead = ["Method"] + (["$n$"] if table.show_n else [])
    groups = table.groups if with_groups else table.groups[:1]
    titles = [column_title(table, g, c, st) for g in groups for c in g.columns]
    out = []
    if with_groups and any(g.title for g in table.groups):
        top, rules, col = [""] * len(lead), [], len(lead) + 1
        for g in table.groups:
            title = group_title(table, g, st)
            top.append(f"\\multicolumn{{{len(g.columns)}}}{{c}}{{{title}}}" if title else
                       " & ".join([""] * len(g.columns)))
            if title:
                rules.append(f"\\cmidrule(lr){{{col}-{col + len(g.columns) - 1}}}")
            col += len(g.columns)
        out += ["    " + " & ".join(top) + " \\\\", "    " + "".join(rules)]
    out.append("    " + " & ".join(lead + titles) + " \\\\")
    return out


def _label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-").lower()


def camel(text: str) -> str:
    """'synthetic-mosi' -> 'SyntheticMosi', 'acc7' -> 'AccSeven': letters only."""
    parts = re.findall(r"[A-Za-z]+|[0-9]", str(text))
    return "".join(_DIGITS[int(p)] if p.isdigit() else p[:1].upper() + p[1:].lower() for p in parts)


def macro_name(study: str, variant: str, dataset: str, metric: str = "", suffix: str = "") -> str:
    return "DLF" + "".join(camel(p) for p in (study, variant, dataset, metric)) + suffix


def to_macros(table: Table) -> str:
    """One ``\\providecommand`` per measured number of ``table`` (see the module doc)."""
    st = LATEX
    head = [f"% Macros for the measured cells of {table.name} (study '{table.study}'), by dlf-ablate report.",
            "% \\DLF<Study><Variant><Dataset><Metric>[Std|Pm|PHolm|Paper|Gap]; <...Dataset>N = seeds.",
            "% \\providecommand: Table 1 and Table 2 share the reference-model cells, so both macro",
            "% files can be \\input together (identical values)."]
    defs: dict[str, str] = {}
    for row in (r for b in table.blocks for r in b.rows if r.kind == "measured"):
        for col in (c for c in table.columns if c.kind == "value"):
            cell = row.cells.get(col.key)
            if cell is not None and cell.mean is not None:
                base = macro_name(table.study, row.variant, col.dataset, col.metric)
                defs.update({base + k: v for k, v in _cell_macros(row, col, st).items()})
                defs[macro_name(table.study, row.variant, col.dataset, "", "N")] = str(cell.n)
    body = [f"\\providecommand{{\\{k}}}{{{v}}}" for k, v in defs.items()]
    return "\n".join(head + body) + "\n"


def _cell_macros(row, col, st: Style) -> dict[str, str]:
    """Suffix -> value for one measured cell."""
    cell = row.cells[col.key]
    out = {"": num(cell.mean, cell.decimals, st), "Pm": cell_text(row, col, _PLAIN_LATEX)}
    if cell.std is not None and cell.n > 1:
        out["Std"] = num(cell.std, cell.decimals, st)
    if cell.p_holm is not None:
        out["PHolm"] = "$<$0.001" if cell.p_holm < 0.001 else f"{cell.p_holm:.3f}"
    if cell.paper is not None:
        out["Paper"] = num(cell.paper, cell.decimals, st)
        out["Gap"] = st.signed(f"{cell.gap:+.{cell.decimals}f}")
    return out


# The Pm macro is the cell without the table's bold/significance decoration.
_PLAIN_LATEX = dataclasses.replace(LATEX, bold=lambda s: s, sup=lambda m: "")
