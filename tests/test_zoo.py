"""The zoo around the model families: the Table 1 studies and tuning a baseline.

The studies list every MMSA baseline; these tests run them minus the baselines this checkout does not
have yet (tests/zoo_studies.py), so they hold for whichever families are registered.
"""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from dlf.cli import app, main
from dlf.config import build_config, preset
from dlf.errors import DLFError
from dlf.resources import resource_dir
from dlf.study.spec import expand, load_study
from study_fixtures import CODE_VERSION
from zoo_studies import available_copy, baselines, bert_baselines, has_features_mode, raw_study

runner = CliRunner()
ZOO_STUDIES = ("table1", "quickstart-table1", "tune")


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DLF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DLF_CODE_VERSION", CODE_VERSION)
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path / "home"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A fake $DLF_DATA_ROOT: tiny synthetic MOSI and MOSEI, aligned_50 and unaligned_50."""
    from dlf.data.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("mmsa")
    for corpus, scale in (("mosi", 0.02), ("mosei", 0.002)):
        for aligned in (True, False):
            name = "aligned_50.pkl" if aligned else "unaligned_50.pkl"
            write_synthetic(corpus, root / corpus.upper() / "Processed" / name, aligned=aligned, scale=scale)
    return root


@pytest.mark.slow
def test_every_zoo_study_lists_every_baseline_of_the_catalogue():
    assert {"mult", "misa", "mag_bert"} <= set(baselines())  # baseline families are registered
    assert not has_features_mode("mag_bert") and has_features_mode("misa")
    for name in ZOO_STUDIES:
        listed = raw_study(name)["variants"]
        expected = [b for b in baselines() if name != "quickstart-table1" or has_features_mode(b)]
        assert [b for b in expected if b not in listed] == [], name
        assert [v for v in listed if v in baselines() and v not in expected] == [], name
    assert raw_study("tune")["variants"][0] == "full"  # tune's default variant stays the full DLF


@pytest.mark.slow
def test_table1_runs_each_family_under_its_own_preset(tmp_path, data_root):
    assert "set" not in raw_study("table1")  # nothing shared may overwrite a family's recipe
    study = load_study(available_copy("table1", tmp_path)[0])
    specs = expand(study, data_root=data_root)
    assert len(specs) == len(study.variants) * 2 * 5
    bert = set(bert_baselines())
    for s in specs:
        v = study.variant(s.variant)
        family = s.config.model.family
        expected = build_config(s.corpus, ("variant", v.overrides))
        assert s.config.to_dict() == {**expected.to_dict(), "seed": s.seed}, s.title
        if s.variant == "dlf":  # the reference row: DLF with the paper's fine-tuned BERT
            assert v.group is None and family == "dlf" and s.config.model.text_encoder == "bert"
        if s.variant in bert:  # MISA, MAG-BERT: their papers' fine-tuned BERT too
            assert s.config.model.text_encoder == "bert"
        if s.variant != "dlf":
            assert v.group == "Baselines" and family == s.variant
            assert s.config.train == preset(s.corpus, family).train  # MMSA's recipe, per corpus
        assert ("unaligned" in s.data_path) == (not s.config.data.aligned)


@pytest.mark.slow
def test_a_shared_bert_folder_reaches_every_bert_family_of_table1_and_nothing_else(tmp_path, data_root):
    study = load_study(available_copy("table1", tmp_path)[0])
    specs = expand(study, data_root=data_root, set_overrides={"model.pretrained": "/models/bert"})
    bert = {s.variant for s in specs if getattr(s.config.model, "pretrained", None) == "/models/bert"}
    assert bert == {"dlf", *bert_baselines()} & set(study.variants)
    plain = {s.title: s.key for s in expand(study, data_root=data_root)}
    for s in specs:  # the feature-level baselines' runs (and so their keys) do not change
        assert (s.key == plain[s.title]) == (s.variant not in bert), s.title
    with pytest.raises(DLFError, match=r"--set: model.beta_shift belongs to no model family of this study's runs"):
        expand(load_study(resource_dir("studies") / "table2.yaml"), data_root=data_root,
               set_overrides={"model.beta_shift": 2.0})


@pytest.mark.slow
def test_plan_table1_on_a_data_root(tmp_path, data_root):
    path, _ = available_copy("table1", tmp_path)
    out = runner.invoke(app, ["plan", str(path), "--data-root", str(data_root)])
    assert out.exit_code == 0, out.output
    n = len(load_study(path).variants)
    assert f"plan: table1 ({n * 10} runs)" in out.output
    assert f"{n * 10} pending, 0 cached" in out.output


@pytest.mark.slow
def test_plan_costs_a_baseline_by_its_patience_not_its_open_epoch_cap(tmp_path, data_root):
    """MMSA's recipes set no epoch cap (1000 epochs) and let patience 8 end a run: the estimate counts
    5 x patience = 40 epochs, not 1000."""
    from dlf.models.registry import build_model, family_of
    from dlf.study.catalogue import REFERENCE_SHAPES
    from dlf.study.plan import CPU_RATE, plan_rows

    study = load_study(available_copy("table1", tmp_path)[0])
    specs = [s for s in expand(study, data_root=data_root) if s.variant == "lf_dnn" and s.corpus == "mosi"]
    rows, total, how = plan_rows(specs, f"sqlite:///{tmp_path / 'none.db'}")
    cfg = specs[0].config
    assert (cfg.train.max_epochs, cfg.train.patience) == (1000, 8)
    params = family_of(cfg).summary(build_model(cfg, *REFERENCE_SHAPES["mosi"]))["total"]
    assert [r.seconds for r in rows] == pytest.approx([params * 1284 * 40 * CPU_RATE] * 5)
    assert "at most 5 x patience" in how and total == pytest.approx(sum(r.seconds for r in rows))


def tune_args(study, *extra: str) -> list[str]:
    # 51 training samples: 4 micro-batches of 16, fewer than MulT's 8 per step
    return ["tune", str(study), "--dataset", "synthetic-mosi", "--trials", "2", "--set", "data.scale=0.04",
            "--set", "train.max_epochs=1", "--set", "train.accumulation=1", *extra]


@pytest.mark.slow
def test_a_dlf_space_is_refused_for_a_baseline_in_one_line(tmp_path, monkeypatch, capsys):
    study, _ = available_copy("tune", tmp_path)
    monkeypatch.setattr(sys, "argv", ["dlf-ablate", *tune_args(study, "--variant", "mult", "--space",
                                                               str(resource_dir("spaces") / "dlf.yaml"))])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ")
    assert "dlf.yaml" in err and "'loss.lambda_r' is a setting of model family dlf, not of 'mult'" in err


@pytest.mark.parametrize("dataset", ["synthetic-mosi", "synthetic-mosei"])
@pytest.mark.parametrize("variant", baselines())
@pytest.mark.slow
def test_every_baseline_tunes_its_familys_default_space(tmp_path, dataset, variant):
    from dlf.tune.plan import TuneOptions, prepare

    study, _ = available_copy("tune", tmp_path)
    corpus, scale = dataset.removeprefix("synthetic-"), {"synthetic-mosi": 0.04, "synthetic-mosei": 0.003}[dataset]
    opts = dict(study=str(study), dataset=dataset, variant=variant, trials=2, set_overrides={"data.scale": scale},
                storage=str(tmp_path / "j.journal"))
    plan = prepare(TuneOptions(**opts))
    family = plan.setup.base.model.family
    own = resource_dir("spaces") / f"{family}_{corpus}.yaml"  # a corpus's own space, where one is shipped
    space = own if own.is_file() else resource_dir("spaces") / f"{family}.yaml"
    expected = yaml.safe_load(space.read_text())
    assert family == variant and plan.setup.space_source == str(space)
    if variant == "mult":  # MulT's MOSEI preset (30 wide, 6 heads) has a space of its own
        assert space.name == f"mult_{corpus}.yaml" if corpus == "mosei" else space.name == "mult.yaml"
    assert set(plan.setup.space) == set(expected)
    # --space naming the family's own paths passes the check made before any data is read
    named = prepare(TuneOptions(**opts, space=str(space)))
    assert set(named.setup.space) == set(expected)


@pytest.mark.slow
def test_tuning_a_baseline_runs_trials_and_exports_its_paths(tmp_path):
    study, _ = available_copy("tune", tmp_path)
    journal, export, uri = tmp_path / "mfn.journal", tmp_path / "best.yaml", f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = runner.invoke(app, tune_args(study, "--variant", "mfn", "--storage", str(journal), "--tracking-uri",
                                       uri, "--seeds", "1111", "--top-k", "1", "--threads", "1", "--export",
                                       str(export), "--no-progress", "--no-plots"))
    assert out.exit_code == 0, out.output
    assert "2 finished (2 complete, 0 pruned), 0 failed" in out.output
    winner = yaml.safe_load(export.read_text())["overrides"]
    space = yaml.safe_load((resource_dir("spaces") / "mfn.yaml").read_text())
    assert set(winner) == set(space)  # the winner is a point of MFN's grid, ready for run --set-file
    assert all(winner[k] in space[k]["choices"] for k in winner)


@pytest.mark.slow
def test_quickstart_table1_trains_every_family_and_reports_a_row_each(tmp_path):
    path, _ = available_copy("quickstart-table1", tmp_path)
    study = load_study(path)
    # one layer per stack: the shared paths reach the families with stacks (DLF, DMD, MulT) and no other;
    # MulT's unaligned sequences take ~25 s a run at its preset depth
    ran = runner.invoke(app, ["run", str(path), "--set", "data.scale=0.04", "--set", "train.max_epochs=1",
                              "--set", "model.n_levels=1", "--set", "model.mem_levels=1", "--threads", "1"])
    assert ran.exit_code == 0, ran.output
    assert f"{2 * len(study.variants)} finished, 0 cached, 0 failed" in ran.output
    shown = runner.invoke(app, ["report", str(path)])
    assert shown.exit_code == 0, shown.output
    table1 = shown.output[shown.output.index("table1"):]
    out = tmp_path / "report"
    written = runner.invoke(app, ["report", str(path), "--latex", "--no-figures", "--out", str(out)])
    assert written.exit_code == 0, written.output
    tex = (out / "table1.tex").read_text()
    for name in study.variants:  # a measured row per family, the reference DLF first
        v = study.variant(name)
        assert v.label in table1 and f"{v.latex} &" in tex, name
    assert tex.index(study.variant("dlf").latex) < min(tex.index(f"{study.variant(b).latex} &")
                                                        for b in study.variants if b != "dlf")
    if shutil.which("pdflatex"):
        _compiles_without_overfull_boxes(out)


def _compiles_without_overfull_boxes(folder) -> None:
    doc = ("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
           "\\input{table1-macros.tex}\n\\input{table1.tex}\n\\end{document}\n")
    (folder / "doc.tex").write_text(doc, encoding="utf-8")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=folder,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "Overfull \\hbox" not in proc.stdout, proc.stdout[-3000:]
