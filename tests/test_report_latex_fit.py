"""Every LaTeX file ``report --latex`` writes fits a plain article's text width.

Realistic content: every variant of the catalogue (the 13 of Table 2, the extras with their long
labels, the baselines), real MOSI and MOSEI (so the paper's numbers and gaps are on) and
synthetic-MOSI, five seeds with one lost (so Table 2 has its n column), quoted rows both ways.
"""
from __future__ import annotations

import functools
import re
import shutil
import subprocess
from types import SimpleNamespace

import pandas as pd
import pytest

from dlf.report import latex
from dlf.report.aggregate import aggregate
from dlf.report.paper import load_paper_tables
from dlf.report.tables import build_tables
from dlf.study.catalogue import load_catalogue

DATASETS = {"mosi": ("mosi", False), "mosei": ("mosei", False), "synthetic-mosi": ("mosi", True)}
NEEDS_PDFLATEX = pytest.mark.skipif(
    shutil.which("pdflatex") is None,
    reason="pdflatex not installed (Debian: texlive-latex-base texlive-latex-recommended)")


# A user's variant with a long label, in a group of its own (studies may define such inline variants).
LONG = SimpleNamespace(group="Combined ablations", label="w/o LFA and L_m, frozen BERT",
                       latex="w/o LFA and $\\mathcal{L}_m$, frozen BERT", order=200)


def _frame() -> pd.DataFrame:
    """Seed rows with two-digit means and stds (the widest cells a real study prints)."""
    rows = []
    for i, (name, v) in enumerate(sorted({**load_catalogue(), "long_combo": LONG}.items())):
        for dataset, (corpus, synthetic) in DATASETS.items():
            for seed in range(5):
                if name == "only_a" and seed == 4:
                    continue
                w = (-1) ** seed * (seed + 1) * 0.01 + i * 0.001
                rows.append({
                    "study": "table2", "variant": name, "dataset": dataset, "corpus": corpus,
                    "synthetic": synthetic, "group": v.group, "label": v.label, "latex": v.latex,
                    "order": v.order, "seed": seed, "run_key": f"{name}{seed}", "status": "FINISHED",
                    "run_id": f"{name}-{dataset}-{seed}", "start_time": 0, "test_acc7": 0.40 + w,
                    "test_acc5": 0.45 + w, "test_acc2": 0.80 + w, "test_f1": 0.80 - w, "test_acc2_has0": 0.79 + w,
                    "test_f1_has0": 0.79 - w, "test_corr": 0.70 + w, "test_mae": 0.75 - w})
    return pd.DataFrame(rows)


@functools.lru_cache(maxsize=None)
def _aggregate() -> pd.DataFrame:
    return aggregate(_frame(), ddof=1, alpha=0.05, paper=load_paper_tables())


@functools.lru_cache(maxsize=None)
def _files(quoted: bool) -> dict[str, str]:
    tables = build_tables(_aggregate(), load_paper_tables(), True, 1, 0.05, quoted=quoted)
    return {f"{t.name}{suffix}": text for t in tables for suffix, text in latex.latex_files(t).items()}


@pytest.mark.slow  # aggregates some 400 seed runs
def test_table2_keeps_the_paper_layout_and_its_companion_has_the_paper():
    files = _files(False)
    assert {"table2-mosi-paper.tex", "table2-mosei-paper.tex"} <= set(files)
    assert "table2-synthetic-mosi-paper.tex" not in files  # generated data: never beside the paper
    main, companion = files["table2-mosi.tex"], files["table2-mosi-paper.tex"]
    assert "\\begin{tabular}{lrcccc}" in main and "Paper" not in main.split("\\bottomrule")[0]
    assert "Method & $n$ & Acc-7 (\\%) & Acc-2 (\\%) & F1 (\\%) & MAE ($\\downarrow$)" in main
    assert "Table~\\ref{tab:dlf-table2-table2-mosi-paper}" in main
    assert "\\label{tab:dlf-table2-table2-mosi-paper}" in companion
    assert "Method & Paper & $\\Delta$ & Paper & $\\Delta$ & Paper & $\\Delta$ & Paper & $\\Delta$" in companion
    # the paper's rows only: its 13 Table 2 variants (DLF's from its Table 1), no extras or baselines
    body = companion.split("\\midrule", 1)[1].split("\\bottomrule")[0]
    rows = [line for line in body.splitlines() if line.strip().endswith("\\\\") and "multicolumn" not in line]
    assert len(rows) == 13 and "BERT" not in body and "TFN" not in body
    assert rows[0].split("&")[:2] == ["    DLF (Ours) ", " 47.08 "]  # the paper's Table 1 DLF row on MOSI
    assert "Rows the paper does not report are left out." in companion
    # the macros keep the paper's numbers and the gaps
    assert "\\providecommand{\\DLFTableTwoFullMosiAccSevenPaper}{47.08}" in files["table2-mosi-macros.tex"]


@pytest.mark.slow
def test_no_paper_writes_no_companion():
    for t in build_tables(_aggregate(), load_paper_tables(), False, 1, 0.05):
        assert set(latex.latex_files(t)) == {".tex", "-macros.tex"}


def overfull(files: dict[str, str], tmp_path) -> list[str]:
    """Compile every file in one minimal article (booktabs only); 'file: message' per Overfull box."""
    body = []
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        body += [f"\\typeout{{DLF-FILE {name}}}", f"\\input{{{name}}}", "\\clearpage"]
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
                                      + "\n".join(body) + "\n\\end{document}\n", encoding="utf-8")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    found, current = [], None
    for line in proc.stdout.splitlines():
        m = re.match(r"DLF-FILE (\S+)", line)
        current = m.group(1) if m else current
        if "Overfull \\hbox" in line:
            found.append(f"{current}: {line}")
    return found


@NEEDS_PDFLATEX
@pytest.mark.slow
@pytest.mark.parametrize("quoted", [False, True], ids=["default", "quoted"])
def test_every_latex_file_fits_a_plain_article(tmp_path, quoted):
    files = _files(quoted)
    assert any(name.startswith("table1") for name in files) and len(files) >= 8
    assert overfull(files, tmp_path) == []


@NEEDS_PDFLATEX
def test_the_check_sees_an_overflowing_table(tmp_path):
    # the 13 columns the paper's numbers used to add to Table 2 overflow: the check must say so
    cols = " & ".join(["47.08"] * 13)
    wide = f"\\begin{{tabular}}{{l{'c' * 13}}}\\toprule DLF (Ours) & {cols} \\\\ \\bottomrule\\end{{tabular}}\n"
    found = overfull({"wide.tex": wide, "ok.tex": "\\begin{tabular}{l}ok\\end{tabular}\n"}, tmp_path)
    assert len(found) == 1 and found[0].startswith("wide.tex: Overfull \\hbox")

