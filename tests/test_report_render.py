"""Render (LaTeX, Markdown, CSV, macros), the table layout and the figures, on hand-built runs.

Golden files live in tests/golden/. After an intended change of the output, regenerate them with

    DLF_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_report_render.py

and review the diff (git diff tests/golden) before committing.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dlf.report import latex, render
from dlf.report.aggregate import aggregate
from dlf.report.figures import ablation_chart, confusion_figure, confusion_matrix
from dlf.report.paper import load_paper_tables
from dlf.report.tables import build_tables

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("DLF_UPDATE_GOLDEN") == "1"
VARIANTS = {  # name: (group, label, latex, order, base Acc-7 in points, seed-wobble factor k)
    "full": (None, "DLF (Ours)", "DLF (Ours)", 0, 46.0, 1.0),
    "only_a": ("Different Modalities", "only A", "only $A$", 10, 15.5, 0.5),
    "wo_lr": ("Different Regularization", "w/o L_r", "w/o $\\mathcal{L}_r$", 20, 45.1, 1.0),
    "wo_lfa": ("Different Components", "w/o LFA", "w/o LFA", 31, 42.3, -1.0),
    "wo_ld": ("Extras", "w/o L_d", "w/o $\\mathcal{L}_d$", 100, 45.6, 2.0),
    "tfn": ("Baselines", "TFN", "TFN", 110, 35.0, 1.5),
}
WOBBLE = (0.4, -0.2, 0.1)  # per seed, times k


def runs(study: str, plan: dict[str, tuple[str, bool, list[str]]], seeds=(0, 1, 2), drop=()) -> pd.DataFrame:
    """Collect-style tidy rows. ``plan``: dataset -> (corpus, synthetic, variants); ``drop``:
    (variant, dataset, seed) slots that did not finish. Values are simple closed forms."""
    rows = []
    for dataset, (corpus, synthetic, names) in plan.items():
        for v in names:
            group, label, tex, order, acc7, k = VARIANTS[v]
            for s in seeds:
                if (v, dataset, s) in drop:
                    continue
                wobble = k * WOBBLE[s]
                bump = 0.1 * s if v == "wo_lr" else 0.0  # wo_lr also drifts with the seed
                rows.append({
                    "study": study, "variant": v, "dataset": dataset, "corpus": corpus, "synthetic": synthetic,
                    "group": group, "label": label, "latex": tex, "order": order, "seed": s,
                    "run_key": f"{v}{s}", "status": "FINISHED", "run_id": f"id-{v}-{s}", "start_time": 0,
                    "test_acc7": (acc7 + wobble + bump) / 100, "test_acc5": (acc7 + 5 + wobble) / 100,
                    "test_acc2": (2 * acc7 - 7 + wobble) / 100, "test_f1": (2 * acc7 - 7.5 + wobble) / 100,
                    "test_acc2_has0": (2 * acc7 - 8 + wobble) / 100, "test_f1_has0": (2 * acc7 - 9 + wobble) / 100,
                    "test_corr": 0.3 + acc7 / 100 + wobble / 100, "test_mae": 1.9 - acc7 / 40 - wobble / 100,
                })
    return pd.DataFrame(rows)


SYNTH = runs("golden-synth", {"synthetic-mosi": ("mosi", True, [v for v in VARIANTS if v != "tfn"])},
             drop={("only_a", "synthetic-mosi", 2)})
REAL = runs("golden-real", {"mosi": ("mosi", False, ["full", "wo_lr", "tfn"]), "mosei": ("mosei", False, ["full", "tfn"])})


def tables(frame: pd.DataFrame, paper_columns: bool = True, ddof: int = 1):
    return _tables("synth" if frame is SYNTH else "real", paper_columns, ddof)


@functools.lru_cache(maxsize=None)
def _tables(which: str, paper_columns: bool, ddof: int):
    """Built once per case (renderers only read them)."""
    paper = load_paper_tables()
    agg = aggregate(SYNTH if which == "synth" else REAL, ddof=ddof, alpha=0.05, paper=paper)
    return {t.name: t for t in build_tables(agg, paper, paper_columns, ddof, 0.05)}


RENDERERS = {".md": render.to_markdown, ".csv": render.to_csv}  # and latex.latex_files' suffixes
CASES = [(prefix, name, ext) for prefix, frame in (("synth", SYNTH), ("real", REAL))
         for name, table in tables(frame).items() for ext in [*latex.latex_files(table), *RENDERERS]]


@pytest.mark.parametrize("prefix,name,ext", CASES, ids=["-".join(c) for c in CASES])
def test_golden(prefix, name, ext):
    table = tables(SYNTH if prefix == "synth" else REAL)[name]
    text = RENDERERS[ext](table) if ext in RENDERERS else latex.latex_files(table)[ext]
    path = GOLDEN / f"{prefix}-{name}{ext}"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"missing golden file {path}; run with DLF_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8")


@pytest.mark.slow
def test_layout_of_the_paper_tables():
    synth = tables(SYNTH)
    assert set(synth) == {"table2-synthetic-mosi", "table1"}
    t2 = synth["table2-synthetic-mosi"]
    assert [b.title for b in t2.blocks] == [None, "Different Modalities", "Different Regularization",
                                            "Different Components", "Extras"]
    assert [c.metric for c in t2.columns] == ["acc7", "acc2", "f1", "mae"]
    assert t2.show_n and t2.n_values == [2, 3]  # only_a lost a seed
    assert not t2.paper_columns  # synthetic rows are never compared with the paper
    real = tables(REAL)
    assert set(real) == {"table2-mosi", "table1"}  # MOSEI has no ablation rows: no Table 2 for it
    t1 = real["table1"]
    assert [d.display for d in t1.datasets] == ["MOSI", "MOSEI"]
    assert [c.metric for c in t1.groups[0].columns] == ["acc7", "acc5", "acc2", "f1", "corr", "mae"]
    # TFN was trained: its measured row replaces the quoted one, as does DLF's own; PMR stays quoted
    assert [r.label for r in t1.blocks[0].rows][:2] == ["LMF", "EF-LSTM"] and t1.blocks[0].kind == "reference"
    assert "PMR" in [r.label for r in t1.blocks[0].rows] and "DLF (paper)" not in [r.label for r in t1.blocks[0].rows]
    assert [(r.label, r.kind) for r in t1.blocks[1].rows] == [("DLF (Ours)", "measured"), ("gap to paper", "gap"),
                                                               ("TFN", "measured"), ("gap to paper", "gap")]
    tfn = t1.blocks[1].rows[2]
    # TFN Acc-7 on MOSI: 35.0 + 1.5 * (0.4, -0.2, 0.1) -> mean 35.15; the paper quotes 34.90 -> gap 0.25
    assert tfn.cells["mosi:acc7"].mean == pytest.approx(35.15) and tfn.cells["mosi:acc7"].gap == pytest.approx(0.25)
    assert tfn.cells["mosi:acc7"].sig  # 11 points below DLF on every seed
    assert "tfn" not in {r.variant for b in real["table2-mosi"].blocks for r in b.rows}  # baselines: Table 1 only
    agg = aggregate(REAL, ddof=1, alpha=0.05, paper=load_paper_tables())
    every = next(t for t in build_tables(agg, load_paper_tables(), quoted=True) if t.name == "table1")
    assert {"TFN", "DLF (paper)"} <= {r.label for r in every.blocks[0].rows}
    assert real["table2-mosi"].paper_columns


def test_cells_are_mean_std_with_paper_precision_bold_and_marks():
    t2 = tables(SYNTH)["table2-synthetic-mosi"]
    tex = latex.to_latex(t2)
    # full acc7: 46.4, 45.8, 46.1 -> mean 46.10, sample std 0.30; the best Acc-7 of the table
    assert "DLF (Ours) & 3 & \\textbf{46.10$_{\\pm 0.30}$}" in tex
    # MAE 1.9 - 46/40 - w/100 = 0.746, 0.752, 0.749: three decimals, lowest = bold
    assert "MAE ($\\downarrow$)" in tex and "\\textbf{0.749$_{\\pm 0.003}$}" in tex
    # paired Acc-7 differences to full (df 2 unless said): only_a (-30.7, -30.4), df 1 -> p 0.0031;
    # wo_lr (-0.9, -0.8, -0.7) -> t -13.86, p 0.0052; wo_lfa (-4.5, -3.3, -3.9) -> t -11.26, p 0.0078;
    # wo_ld (0, -0.6, -0.3) -> t -1.73, p 0.225. Holm: 0.0125, 0.0155, 0.0156, 0.225 -> all but wo_ld
    marked = {r.variant: r.cells["synthetic-mosi:acc7"].sig for b in t2.blocks for r in b.rows}
    assert marked == {"full": False, "only_a": True, "wo_lr": True, "wo_lfa": True, "wo_ld": False}
    wo_lr = next(r for b in t2.blocks for r in b.rows if r.variant == "wo_lr")
    assert wo_lr.cells["synthetic-mosi:acc7"].p_holm == pytest.approx(3 * (1 - 8 * 3 ** .5 / 194 ** .5), rel=1e-6)
    # wo_lr Acc-7: 45.5, 45.0, 45.4 -> mean 45.30, std sqrt(0.14 / 2) = 0.26
    assert render.cell_text(wo_lr, t2.columns[0], latex.LATEX) == "45.30 $\\pm$ 0.26$^{\\ddagger}$"
    assert "Holm-adjusted $p<0.05$" in tex


def test_synthetic_captions_never_name_the_real_dataset():
    for table in tables(SYNTH).values():
        for text in (render.caption(table, render.MARKDOWN), render.caption(table, latex.LATEX)):
            assert "synthetic-MOSI (generated data, not CMU-MOSI)" in text
            assert text.replace("not CMU-MOSI", "").count("CMU-MOSI ") == 0
            assert " on MOSI" not in text and " on CMU-MOSI" not in text
    t1 = tables(SYNTH)["table1"]
    assert "not comparable" in render.caption(t1, render.MARKDOWN)
    assert "not comparable" in render.block_title(t1, t1.blocks[0], render.MARKDOWN)


@pytest.mark.slow
def test_no_paper_hides_paper_columns_and_gap_rows():
    real = tables(REAL, paper_columns=False)
    assert [c.kind for c in real["table2-mosi"].columns] == ["value"] * 4
    assert all(r.kind in ("measured", "reference") for b in real["table1"].blocks for r in b.rows)
    assert "Paper" not in render.to_markdown(real["table2-mosi"])


def test_macro_names_are_letters_only():
    assert latex.camel("table2") == "TableTwo" and latex.camel("synthetic-mosi") == "SyntheticMosi"
    assert latex.macro_name("table2", "full", "mosi", "acc7") == "DLFTableTwoFullMosiAccSeven"
    assert latex.macro_name("s", "wo_lr", "/data/my set.pkl", "f1", "Std") == "DLFSWoLrDataMySetPklFOneStd"
    text = latex.to_macros(tables(REAL)["table2-mosi"])
    assert "\\providecommand{\\DLFGoldenRealFullMosiAccSeven}{46.10}" in text
    assert "\\providecommand{\\DLFGoldenRealFullMosiAccSevenPaper}{47.08}" in text
    assert "\\providecommand{\\DLFGoldenRealWoLrMosiN}{3}" in text


def test_latex_escape():
    assert latex.escape("a_b & 50% #1 {x} ~^\\") == \
        "a\\_b \\& 50\\% \\#1 \\{x\\} \\textasciitilde{}\\textasciicircum{}\\textbackslash{}"


def test_render_imports_neither_pandas_nor_mlflow():
    code = ("import sys, dlf.report.render, dlf.report.latex\n"
            "print([m for m in ('pandas', 'mlflow') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.skipif(shutil.which("pdflatex") is None,
                    reason="pdflatex not installed (Debian: texlive-latex-base texlive-latex-recommended)")
@pytest.mark.slow
def test_tex_files_compile_with_pdflatex(tmp_path):
    inputs = []
    for prefix, frame in (("synth", SYNTH), ("real", REAL)):
        for name, table in tables(frame).items():
            for suffix, text in latex.latex_files(table).items():
                (tmp_path / f"{prefix}-{name}{suffix}").write_text(text, encoding="utf-8")
                inputs.append(f"\\input{{{prefix}-{name}{suffix}}}")
    doc = ("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n" + "\n".join(inputs) +
           "\nCited: \\DLFGoldenRealFullMosiAccSevenPm, gap \\DLFGoldenRealFullMosiAccSevenGap.\n\\end{document}\n")
    (tmp_path / "doc.tex").write_text(doc, encoding="utf-8")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "Overfull \\hbox" not in proc.stdout, proc.stdout[-3000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000


def test_confusion_matrix_counts_seven_classes():
    # round(clip(x, -3, 3)): -3.4 -> HN; -0.4 -> NT; 0.6 -> WP; 2.5 -> P (half to even); 9 -> HP
    labels = [-3.4, -0.4, 0.6, 2.5, 9.0, 1.0]
    preds = [-3.0, 0.4, -0.6, 2.4, 2.6, 1.4]
    got = confusion_matrix(labels, preds)
    want = np.zeros((7, 7), dtype=int)
    for t, p in ((0, 0), (3, 3), (4, 2), (5, 5), (6, 6), (4, 4)):
        want[t, p] += 1
    assert (got == want).all()


@pytest.mark.slow
def test_figures_are_written_as_pdf_and_png(tmp_path):
    t2 = tables(SYNTH)["table2-synthetic-mosi"]
    paths = ablation_chart(t2, tmp_path / "fig-ablation")
    rng = np.random.default_rng(0)
    labels = rng.uniform(-3, 3, 200)
    paths += confusion_figure(labels, labels + rng.normal(0, 0.6, 200), tmp_path / "fig-confusion", "test")
    assert sorted(p.name for p in paths) == ["fig-ablation.pdf", "fig-ablation.png", "fig-confusion.pdf",
                                             "fig-confusion.png"]
    for p in paths:
        head = p.read_bytes()[:8]
        assert head.startswith(b"%PDF") if p.suffix == ".pdf" else head == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_layout_follows_the_data_outside_the_paper():
    frame = runs("custom", {"/data/my_mosi.pkl": ("mosi", False, ["full", "wo_lr", "wo_ld", "only_a"])})
    frame.loc[frame["variant"] == "wo_ld", "group"] = "My group"  # a user group: after the paper's
    frame.loc[frame["variant"] == "only_a", "group"] = None  # ungrouped, not the reference: on top
    paper = load_paper_tables()
    built = {t.name: t for t in build_tables(aggregate(frame, paper=paper), paper)}
    assert set(built) == {"table2-my_mosi", "table1"}
    t2 = built["table2-my_mosi"]
    assert [(b.title, [r.variant for r in b.rows]) for b in t2.blocks] == [
        (None, ["full", "only_a"]), ("Different Regularization", ["wo_lr"]), ("My group", ["wo_ld"])]
    assert "my_mosi" in render.caption(t2, render.MARKDOWN) and t2.paper_columns  # real MOSI corpus
    t1 = built["table1"]
    assert [g.title for g in t1.groups] == ["my_mosi"]
    assert "my\\_mosi" in latex.to_latex(t1)
