"""`dlf-ablate report` end to end on a temporary MLflow store (tests/report_store.py)."""
from __future__ import annotations

import csv
import sys

import pytest
from report_store import shared_demo_store

from dlf.cli import main


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    return shared_demo_store(tmp_path_factory)


def report(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run the real entry point in-process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["dlf-ablate", "report", *args])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as done:
        main()
    out = capsys.readouterr()
    return done.value.code or 0, out.out, out.err


@pytest.mark.slow
def test_writes_tables_macros_csv_and_figures(uri, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    code, stdout, stderr = report(monkeypatch, capsys, "demo", "--tracking-uri", uri, "--latex",
                                  "--markdown", "--csv", "--out", str(out))
    assert code == 0, stderr
    names = {p.name for p in out.iterdir()}
    for stem in ("table2-synthetic-mosi", "table1"):
        assert {f"{stem}.tex", f"{stem}-macros.tex", f"{stem}.md", f"{stem}.csv"} <= names
    assert {"runs.csv", "fig-ablation-synthetic-mosi.pdf", "fig-ablation-synthetic-mosi.png",
            "fig-confusion-synthetic-mosi.pdf", "fig-confusion-synthetic-mosi.png"} <= names
    assert f"wrote {out / 'table1.tex'}" in stdout
    t2 = (out / "table2-synthetic-mosi.tex").read_text()
    assert "synthetic-MOSI (generated data, not CMU-MOSI)" in t2 and "\\toprule" in t2
    assert "only $A$ & 2 &" in t2  # only_a#2 never ran: n shown because seeds differ
    with open(out / "runs.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 9  # finished seed runs only
    # what is missing, failed or running is said, run by run
    for line in ("only_a@synthetic-mosi#2: missing", "wo_lfa@synthetic-mosi#2: failed",
                 "wo_lfa@synthetic-mosi#1: running"):
        assert line in stderr


@pytest.mark.slow
def test_terminal_tables_without_a_format_flag(uri, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = report(monkeypatch, capsys, "demo", "--tracking-uri", uri)
    assert code == 0
    assert "table2-synthetic-mosi" in stdout and "Different Regularization" in stdout
    assert "45.60 ± 0.53" in stdout  # full Acc-7 over seeds 0-2: 45.0, 45.8, 46.0 (demo_metrics)
    assert not (tmp_path / "reports").exists()  # nothing written


@pytest.mark.slow
def test_all_studies_default_folders_ddof_and_paper_columns(uri, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, stderr = report(monkeypatch, capsys, "--tracking-uri", uri, "--markdown", "--csv",
                             "--no-figures", "--std-ddof", "0")
    assert code == 0, stderr
    real = tmp_path / "reports" / "realdemo"
    assert (tmp_path / "reports" / "demo" / "table1.md").is_file() and (real / "table2-mosi.md").is_file()
    md = (real / "table2-mosi.md").read_text()
    assert "Paper" in md and "47.08" in md  # real MOSI: the paper's Acc-7 of the full model
    assert "ddof=0" in md
    with open(real / "table2-mosi.csv") as fh:
        row = next(r for r in csv.DictReader(fh) if r["variant"] == "full" and r["metric"] == "acc7")
    # full Acc-7 on seeds 0, 1: 45.0 and 45.8 -> population std 0.4
    assert float(row["std"]) == pytest.approx(0.4) and float(row["paper"]) == 47.08
    code, _, _ = report(monkeypatch, capsys, "realdemo", "--tracking-uri", uri, "--markdown", "--no-paper",
                        "--out", str(tmp_path / "np"))
    assert code == 0 and "Paper" not in (tmp_path / "np" / "table2-mosi.md").read_text()


@pytest.mark.slow
def test_a_study_yaml_names_the_runs_it_expects(uri, tmp_path, monkeypatch, capsys):
    study = tmp_path / "demo.yaml"
    study.write_text("name: demo\ndatasets: [synthetic-mosi]\nvariants: [full, wo_lr]\nseeds: [0, 1, 2, 3]\n")
    code, stdout, stderr = report(monkeypatch, capsys, str(study), "--tracking-uri", uri)
    assert code == 0
    assert "full@synthetic-mosi#3: missing" in stderr and "wo_lr@synthetic-mosi#3: missing" in stderr
    assert "only_a@synthetic-mosi#2" not in stderr  # not part of this YAML (still reported as tracked)


@pytest.mark.slow
def test_no_runs_is_one_line_and_exit_2(uri, tmp_path, monkeypatch, capsys):
    code, _, stderr = report(monkeypatch, capsys, "nothing-here", "--tracking-uri", uri)
    assert code == 2 and stderr.startswith("error: no finished runs for nothing-here")
    assert len(stderr.strip().splitlines()) == 1
    code, _, stderr = report(monkeypatch, capsys, "--tracking-uri", f"sqlite:///{tmp_path / 'no.db'}")
    assert code == 2 and "no MLflow store" in stderr and not (tmp_path / "no.db").exists()


def test_help_names_every_option(monkeypatch, capsys):
    code, stdout, _ = report(monkeypatch, capsys, "--help")
    assert code == 0
    for option in ("--latex", "--markdown", "--csv", "--out", "--tracking-uri", "--std-ddof", "--no-paper",
                   "--alpha"):
        assert option in stdout
