"""``report --figures`` (t-SNE, per-modality bars) and ``robustness`` on a tiny trained study, plus the
noise model and the robustness scores on hand-made numbers."""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
from study_fixtures import write_study

from dlf.analysis.robust_scores import effective_robustness, relative_robustness, scores
from dlf.analysis.robustness import noise_scale, perturb
from dlf.cli import main


def cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["dlf-ablate", *map(str, args)])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as done:
        main()
    out = capsys.readouterr()
    return done.value.code or 0, out.out, out.err


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_mosi):
    """full and only_a, seeds 1 and 2, 2 epochs on the 51-sample synthetic MOSI: (study file, tracking URI)."""
    from dlf.run.local import run_study
    from dlf.study.file import load_study
    from dlf.study.spec import expand

    folder = tmp_path_factory.mktemp("analysis")
    path = write_study(folder, tiny_mosi, name="figs", variants=("full", "only_a"), seeds=(1, 2))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DLF_CODE_VERSION", "test")
        done = run_study(expand(load_study(str(path))), tracking_uri=uri, workers=1, threads=1)
    assert done.ok
    return path, uri


def test_the_noise_is_relative_to_the_training_std_keeps_padding_and_is_deterministic():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 6, 3)).astype(np.float32) * np.array([1.0, 10.0, 0.0], dtype=np.float32)
    x[:, 4:] = 0  # padding
    split = type("S", (), {"audio": x})()
    scale = noise_scale(split, "a")
    np.testing.assert_allclose(scale, x[:, :4].reshape(-1, 3).std(0), rtol=1e-6)
    a, b = perturb(x, ("noise", "a", 0.5), scale, 7), perturb(x, ("noise", "a", 0.5), scale, 7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, perturb(x, ("noise", "a", 0.5), scale, 8))
    assert (a[:, 4:] == 0).all() and np.array_equal(a[..., 2], x[..., 2])  # padding and a constant feature kept
    assert np.abs(a - x)[..., 1].mean() > 5 * np.abs(a - x)[..., 0].mean()  # 10x the std, 10x the noise
    np.testing.assert_array_equal(perturb(x, ("noise", "a", 0.0), scale, 7), x)
    assert not perturb(x, ("drop", "a"), scale, 7).any()


def test_relative_and_effective_robustness_on_hand_made_curves():
    assert relative_robustness([0, 0.5, 1], [80, 70, 60]) == pytest.approx(70.0)
    assert relative_robustness([0, 0.25, 1], [80, 80, 40]) == pytest.approx((80 * 0.25 + 60 * 0.75) / 1)
    curves = {"a": np.array([80.0, 70.0]), "b": np.array([70.0, 60.0]), "c": np.array([60.0, 56.0])}
    er = effective_robustness(curves)  # the fit through the three: y1 = a + b y0
    b, a = np.polyfit([80, 70, 60], [70, 60, 56], 1)
    assert er["c"] == pytest.approx(56 - (a + b * 60)) and sum(er.values()) == pytest.approx(0, abs=1e-9)
    assert all(np.isnan(v) for v in effective_robustness({"a": curves["a"], "b": curves["b"]}).values())
    rows = [{"dataset": "d", "variant": v, "label": v, "modality": "l", "condition": "noise", "noise": s,
             "seed": seed, "acc2": y / 100} for v, c in curves.items() for s, y in zip((0.0, 1.0), c) for seed in (1, 2)]
    table = scores(pd.DataFrame(rows), "acc2")
    assert table.set_index("variant")["rr_mean"].to_dict() == pytest.approx({"a": 75.0, "b": 65.0, "c": 58.0})


def test_figure_choices_display_names_and_the_modality_bars_without_training(tmp_path):
    from dlf.analysis.plots import modality_figure
    from dlf.analysis.report_figures import check_choice
    from dlf.analysis.runs import display_name
    from dlf.analysis.tsne import choose_variants
    from dlf.errors import DLFError

    finished = [("full", 1), ("only_a", 1), ("full", 2)]
    assert choose_variants("s", finished, None, 1) == ["full", "only_a"]
    assert choose_variants("s", finished, ["only_a", "full"], 1) == ["only_a", "full"]
    with pytest.raises(DLFError, match="--figure-variants: only_a has no finished run at seed 2 in study 's'"):
        choose_variants("s", finished, ["only_a"], 2)
    runs = pd.DataFrame({"variant": ["full", "only_a"], "seed": [3, 3]})
    check_choice("s", runs, None, (), None, None)  # the first seed with runs
    with pytest.raises(DLFError, match="--figure-seed 1: study 's' has no finished run with that seed; "
                                       "seeds with finished runs: 3"):
        check_choice("s", runs, [("full", "d", 1)], (), None, None)  # the study file's first seed
    assert display_name("synthetic-mosi", "mosi", True) == "synthetic-MOSI (generated data)"
    assert display_name("mosei", "mosei", False) == "MOSEI"
    rows = [{"label": "DLF", "acc2_mean": 80.0, "acc2_std": 1.0, "acc2_n": 2},
            {"label": "only L", "acc2_mean": 70.0, "acc2_std": None, "acc2_n": 1}]
    paths = modality_figure(rows, tmp_path / "m", "title", ["acc2"])
    assert [p.suffix for p in paths] == [".pdf", ".png"] and all(p.stat().st_size > 0 for p in paths)


@pytest.mark.slow
def test_report_figures_draw_the_tsne_and_the_modality_bars(study, tmp_path, monkeypatch, capsys):
    path, uri = study
    out = tmp_path / "figs"
    code, stdout, err = cli(monkeypatch, capsys, "report", path, "--tracking-uri", uri, "--figures",
                            "--figures-dir", out)
    assert code == 0, err
    names = {p.name for p in out.iterdir()}
    stem = "tiny_mosi_aligned"
    assert {f"fig-tsne-figs-{stem}-seed1.pdf", f"fig-tsne-figs-{stem}-seed1.png",
            f"fig-modalities-figs-{stem}.pdf", f"fig-modalities-figs-{stem}.png"} <= names, names
    assert all((out / n).stat().st_size > 1000 for n in names)
    assert f"wrote {out / f'fig-tsne-figs-{stem}-seed1.png'}" in stdout
    first = (out / f"fig-tsne-figs-{stem}-seed1.png").read_bytes()
    code, _, err = cli(monkeypatch, capsys, "report", path, "--tracking-uri", uri, "--figures", "--figures-dir", out,
                       "--figure-variants", "only_a,full", "--figure-seed", "2")
    assert code == 0, err
    assert (out / f"fig-tsne-figs-{stem}-seed2.pdf").stat().st_size > 1000
    assert (out / f"fig-tsne-figs-{stem}-seed1.png").read_bytes() == first


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--figure-variants", "full,nope"], "--figure-variants: nope has no finished run at seed 1"),
    (["--figure-seed", "9"], "--figure-seed 9: study 'figs' has no finished run with that seed"),
])
def test_report_figure_choices_are_refused_before_anything_is_written(study, tmp_path, monkeypatch, capsys,
                                                                        args, message):
    path, uri = study
    code, _, err = cli(monkeypatch, capsys, "report", path, "--tracking-uri", uri, "--figures", "--csv",
                       "--out", tmp_path / "o", *args)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def _robustness(monkeypatch, capsys, uri, path, out, *extra):
    return cli(monkeypatch, capsys, "robustness", path, "--tracking-uri", uri, "--modality", "l,a",
               "--noise", "0,0.5,1", "--drop", "--out", out, *extra)


@pytest.mark.slow
def test_robustness_zero_noise_is_the_tracked_test_metrics_and_two_calls_agree(study, tmp_path, monkeypatch, capsys):
    from dlf.analysis.runs import finished_runs

    path, uri = study
    code, stdout, err = _robustness(monkeypatch, capsys, uri, path, tmp_path / "a")
    assert code == 0, err
    for name in ("robustness-figs.csv", "robustness-figs-scores.csv", "robustness-figs.md", "robustness-figs.tex",
                 "fig-robustness-figs-tiny_mosi_aligned.pdf", "fig-robustness-figs-tiny_mosi_aligned.png"):
        assert (tmp_path / "a" / name).stat().st_size > 0, name
    _, runs, _ = finished_runs(uri, str(path))
    from dlf.run.tracking import client

    c = client(uri)
    for run in runs:  # the clean (zero-noise) row is the run's own test metrics, exactly
        nested = c.search_runs([c.get_run(run.run_id).info.experiment_id],
                               f"tags.`mlflow.parentRunId` = '{run.run_id}' and tags.`dlf.level` = 'robustness'")
        assert len(nested) == 1
        got = nested[0].data.metrics
        for k in ("acc7", "acc2", "f1", "mae"):
            assert got[f"robust/clean/{k}"] == run.test[k], (run.title, k)
        assert {"robust/l/drop/acc2", "robust/a/noise0.5/mae", "robust/a/noise1/f1"} <= set(got)
    table = pd.read_csv(tmp_path / "a" / "robustness-figs.csv")
    clean = table[(table["condition"] == "noise") & (table["noise"] == 0)]
    assert len(clean) == 4  # 2 variants x 2 modalities, each sigma=0 row = clean
    code, _, err = _robustness(monkeypatch, capsys, uri, path, tmp_path / "b")
    assert code == 0 and "read back from MLflow" in err
    assert (tmp_path / "a" / "robustness-figs.csv").read_text() == (tmp_path / "b" / "robustness-figs.csv").read_text()
    assert len(c.search_runs([c.get_run(runs[0].run_id).info.experiment_id], "tags.`dlf.level` = 'robustness'")) == 4


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--modality", "l,x"], "--modality l,x: unknown modality x"),
    (["--noise", "0,-1"], "--noise '-1': a noise strength is a finite number >= 0"),
    (["--noise", "0,nan"], "--noise 'nan'"),
    (["--metric", "acc3"], "--metric 'acc3': not a metric"),
])
def test_robustness_bad_input_is_one_line_and_writes_nothing(study, tmp_path, monkeypatch, capsys, args, message):
    path, uri = study
    code, _, err = cli(monkeypatch, capsys, "robustness", path, "--tracking-uri", uri, "--out", tmp_path / "o", *args)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_robustness_refuses_an_unwritable_out_and_a_study_without_runs(study, tmp_path, monkeypatch, capsys):
    path, uri = study
    (tmp_path / "file").write_text("x")
    code, _, err = cli(monkeypatch, capsys, "robustness", path, "--tracking-uri", uri, "--out", tmp_path / "file")
    assert code == 2 and "--out" in err and "is a file" in err
    code, _, err = cli(monkeypatch, capsys, "robustness", "no-such-study", "--tracking-uri", uri, "--out", tmp_path / "o")
    assert code == 2 and "study 'no-such-study': no finished runs" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
