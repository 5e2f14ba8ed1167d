"""Bad input and damaged state as a user meets them: one `error:` line, exit 2, no traceback, and
the damaged file left exactly as it was (an unusable --predictions path, a damaged MLflow store, a
damaged tune journal, library warnings). Signals: tests/test_signals_cli.py."""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from dlf.cli import main
from study_fixtures import write_study


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """The real entry point in-process: (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["dlf-ablate", *args])
    with pytest.raises(SystemExit) as done:
        main()
    return done.value.code or 0, capsys.readouterr().err


def one_error_line(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    assert "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------- evaluate --predictions
def test_predictions_path_is_refused_before_the_model_is_loaded(tmp_path, monkeypatch, capsys):
    folder, a_file = tmp_path / "preds", tmp_path / "notes.txt"
    folder.mkdir()
    a_file.write_text("keep me\n")
    missing = tmp_path / "missing.pt"  # were the model loaded first, the error would be about it
    for target, message in ((folder, "is a folder"), (a_file / "p.csv", "is a file, not a folder"),
                            (a_file / "sub" / "p.csv", "is a file, not a folder")):
        line = one_error_line(*cli(monkeypatch, capsys, "evaluate", "--checkpoint", str(missing),
                                   "--dataset", "synthetic-mosi", "--predictions", str(target)))
        assert f"--predictions {target}" in line and message in line and "missing.pt" not in line
    assert list(folder.iterdir()) == [] and a_file.read_text() == "keep me\n"


def test_train_save_and_convert_out_folders_are_refused_before_any_work(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "models"
    folder.mkdir()
    for args in (["train", "--dataset", "synthetic-mosi", "--device", "cpu", "--save", str(folder)],
                 ["convert-official", str(tmp_path / "missing.pth"), "--dataset", "mosi", "--out", str(folder)]):
        line = one_error_line(*cli(monkeypatch, capsys, *args))
        assert f"{args[-2]} {folder}: is a folder" in line and str(folder / "model.pt") in line, line
    assert list(folder.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes anywhere")
def test_predictions_in_an_unwritable_folder_is_refused(tmp_path, monkeypatch, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    line = one_error_line(*cli(monkeypatch, capsys, "evaluate", "--checkpoint", str(tmp_path / "m.pt"),
                               "--dataset", "synthetic-mosi", "--predictions", str(locked / "p.csv")))
    assert "not writable" in line and str(locked) in line


# ---------------------------------------------------------------- damaged MLflow store
@pytest.fixture(scope="module")
def good_store(tmp_path_factory) -> Path:
    """A real MLflow SQLite store with one experiment and one seed run."""
    from dlf.run import tracking

    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    c = tracking.client(f"sqlite:///{db}")
    exp = c.create_experiment("damaged", artifact_location=(db.parent / "art").as_uri())
    c.create_run(exp, tags={"dlf.level": "seed", "dlf.variant": "full", "dlf.dataset": "synthetic-mosi"})
    return db


def _damaged(kind: str, good: Path) -> bytes:
    data = good.read_bytes()
    if kind == "random bytes":
        return os.urandom(8192)
    if kind == "truncated":
        return data[: len(data) // 2]
    if kind == "text":
        return b"name: not a database\n"
    con = sqlite3.connect(good)
    page = con.execute("PRAGMA page_size").fetchone()[0]
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'runs'").fetchone()[0]
    con.close()
    start = (root - 1) * page  # the runs table's first page: the schema still reads, queries do not
    return data[:start] + b"\xff" * page + data[start + page:]


@pytest.mark.parametrize("kind", ["random bytes", "truncated", "text", "damaged runs page"])
@pytest.mark.slow
def test_report_on_a_damaged_store_is_one_line_and_leaves_it_untouched(kind, good_store, tmp_path,
                                                                      monkeypatch, capsys):
    db = tmp_path / "mlflow.db"
    db.write_bytes(_damaged(kind, good_store))
    before = db.read_bytes()
    line = one_error_line(*cli(monkeypatch, capsys, "report", "--tracking-uri", f"sqlite:///{db}"))
    assert str(db) in line and "restore it from a backup" in line and "--tracking-uri" in line
    assert db.read_bytes() == before


@pytest.mark.slow
def test_a_foreign_sqlite_file_is_never_given_mlflow_tables(tmp_path, monkeypatch, capsys):
    db = tmp_path / "other.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE notes (text)")
    con.commit()
    con.close()
    before = db.read_bytes()
    study = write_study(tmp_path, "synthetic-mosi", seeds=(1,), variants=("full",))
    for args in (["report"], ["plan", str(study)], ["run", str(study)], ["ui"]):
        line = one_error_line(*cli(monkeypatch, capsys, *args, "--tracking-uri", f"sqlite:///{db}"))
        assert str(db) in line and "not an MLflow store" in line and "notes" in line, args
    assert db.read_bytes() == before


def test_report_reads_an_empty_file_as_no_store_and_writes_nothing(tmp_path, monkeypatch, capsys):
    db = tmp_path / "mlflow.db"
    db.touch()
    line = one_error_line(*cli(monkeypatch, capsys, "report", "--tracking-uri", f"sqlite:///{db}"))
    assert "no MLflow store there" in line and db.stat().st_size == 0


# ---------------------------------------------------------------- damaged tune journal
@pytest.fixture(scope="module")
def good_journal(tmp_path_factory) -> Path:
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = tmp_path_factory.mktemp("journal") / "good.journal"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))
    for value in (0.5, 0.25):
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        study.tell(trial, value)
    return path


def _journal(kind: str, good: Path) -> bytes:
    lines = good.read_bytes().splitlines(keepends=True)
    if kind == "damaged line 3":
        return b"".join(lines[:2] + [lines[2][: len(lines[2]) // 2] + b"\n"] + lines[3:])
    if kind == "incomplete last line":  # a crash in the middle of Optuna's append
        return b"".join(lines) + lines[3][:40]
    return {"text": b"notes about the search\n", "yaml": b"loss.lambda_r: {low: 0.1, high: 1}\n",
            "json, not a journal": b'{"trials": 3}\n'}[kind]


TUNE = ["--dataset", "synthetic-mosi", "--trials", "1", "--no-progress", "--no-plots", "--device", "cpu",
        "--threads", "1"]


@pytest.mark.parametrize("kind, says", [
    ("damaged line 3", "line 3 is damaged"), ("incomplete last line", "last line ({after}) is incomplete"),
    ("text", "not an Optuna journal"), ("yaml", "not an Optuna journal"),
    ("json, not a journal", "not an Optuna journal")])
@pytest.mark.slow
def test_tune_on_a_damaged_journal_is_one_line_and_leaves_it_untouched(kind, says, good_journal, tmp_path,
                                                                      monkeypatch, capsys):
    says = says.format(after=len(good_journal.read_bytes().splitlines()) + 1)
    journal, store = tmp_path / "search.journal", tmp_path / "mlflow.db"
    journal.write_bytes(_journal(kind, good_journal))
    before = journal.read_bytes()
    study = write_study(tmp_path, "synthetic-mosi", seeds=(1,), variants=("full",))
    line = one_error_line(*cli(monkeypatch, capsys, "tune", str(study), *TUNE, "--storage", str(journal),
                               "--tracking-uri", f"sqlite:///{store}"))
    assert f"tune journal {journal}" in line and says in line and "--storage" in line
    assert journal.read_bytes() == before
    assert not store.exists()  # refused before a tracking run was opened for the search


@pytest.mark.slow
def test_the_default_journal_and_a_sqlite_file_as_storage(good_store, tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    monkeypatch.setenv("DLF_HOME", str(home))
    default = home / "tune" / "tiny-full@synthetic-mosi.journal"
    default.parent.mkdir(parents=True)
    default.write_bytes(b'{"op_code":0,"worker_id":"w","study_name":"tiny-full@synthetic-mosi","directions":[1]}\n'
                        b'{"op_code":5,"worker_id"\n{"op_code":4}\n')
    study = write_study(tmp_path, "synthetic-mosi", seeds=(1,), variants=("full",))
    line = one_error_line(*cli(monkeypatch, capsys, "tune", str(study), *TUNE))
    assert str(default) in line and "line 2 is damaged" in line
    sqlite_file = tmp_path / "optuna.db"
    shutil.copy(good_store, sqlite_file)
    line = one_error_line(*cli(monkeypatch, capsys, "tune", str(study), *TUNE, "--storage", str(sqlite_file)))
    assert "a SQLite database, not an Optuna journal" in line and f"sqlite:///{sqlite_file.resolve()}" in line


def test_a_sound_journal_still_opens(good_journal):
    import optuna

    from dlf.tune.storage import open_storage

    study = optuna.load_study(study_name="s", storage=open_storage(str(good_journal)))
    assert len(study.trials) == 2


# ---------------------------------------------------------------- library warnings
NOISY_REPORT = """
import sys, warnings
import dlf.report
from dlf.cli import main

real = dlf.report.make_report

def noisy(*args, **kwargs):  # what MLflow, pydantic and Optuna print on import or first use
    for module, category, text in [("mlflow.tracking.fake", FutureWarning, "this API is going away"),
                                   ("pydantic._internal.fake", UserWarning, "Field shadows an attribute"),
                                   ("dlf.tune.fake", UserWarning, "X is experimental (supported from v3.0.0).")]:
        exec("warnings.warn(text, category)", {"__name__": module, "warnings": warnings,
                                                "text": text, "category": category})
    return real(*args, **kwargs)

dlf.report.make_report = noisy
sys.argv = ["dlf-ablate", "report", "--tracking-uri", sys.argv[1]]
main()
"""


@pytest.mark.slow
def test_library_warnings_do_not_precede_the_error_line(tmp_path):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"not a database at all\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    out = subprocess.run([sys.executable, "-c", NOISY_REPORT, f"sqlite:///{db}"], capture_output=True,
                         text=True, timeout=300, env=env)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [out.stderr.strip()], out.stderr
    assert out.stderr.startswith("error: ") and str(db) in out.stderr


def test_the_projects_own_warnings_stay_visible():
    code = """
import warnings
from dlf.startup import quiet_library_warnings
quiet_library_warnings()
for module in ("dlf.metrics", "mlflow.store", "dlfx"):
    for category in (RuntimeWarning, UserWarning, FutureWarning):
        exec("warnings.warn(module + ' ' + category.__name__, category)",
             {"__name__": module, "warnings": warnings, "module": module, "category": category})
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    err = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True,
                         env=env, timeout=60).stderr
    assert "mlflow.store FutureWarning" in err  # -W given: the user's choice wins, nothing hidden
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60).stderr
    shown = {line.rsplit(": ", 1)[1] for line in err.splitlines() if "Warning: " in line}
    assert shown == {"dlf.metrics RuntimeWarning", "dlf.metrics UserWarning", "dlf.metrics FutureWarning",
                     "mlflow.store RuntimeWarning", "dlfx RuntimeWarning"}, err


def test_ui_on_a_busy_port_is_one_line(tmp_path, monkeypatch, capsys):
    import socket

    db = tmp_path / "mlflow.db"
    db.touch()  # an empty file is a store not yet written: the UI may create its tables
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = str(busy.getsockname()[1])
        line = one_error_line(*cli(monkeypatch, capsys, "ui", "--tracking-uri", f"sqlite:///{db}", "--port", port))
    assert f"--port {port}: cannot listen there (Address already in use)" in line
