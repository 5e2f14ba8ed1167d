"""Shared test set-up: few torch threads, an isolated cache/home, and tiny synthetic MMSA pickles.

Every test session gets its own ``DLF_CACHE`` and ``DLF_HOME`` (so nothing touches
``~/.cache/dlf-ablate`` or ``./.dlf``), no ``MLFLOW_TRACKING_URI`` and no ``DLF_DATA_ROOT``.
Subprocesses started by tests inherit the same environment.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from module_check import (  # noqa: F401 - hooks of the --check-modules option
    pytest_addoption, pytest_configure, pytest_sessionfinish, pytest_terminal_summary)

torch.set_num_threads(2)  # the CI machine has 2 shared cores

_MODULE_MARKS = re.compile(r"^pytestmark = (.*)$", re.M)


def pytest_ignore_collect(collection_path: Path, config):
    """A lane that deselects a whole module's mark (``pytestmark = pytest.mark.slow``) does not import
    that module: hypothesis or a server client would cost the fast lane seconds for no test."""
    expr = config.getoption("markexpr") or ""
    if not expr or collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    line = _MODULE_MARKS.search(collection_path.read_text(encoding="utf-8"))
    marks = re.findall(r"pytest\.mark\.(\w+)\b(?!\()", line.group(1)) if line else []
    return True if any(f"not {m}" in expr for m in marks) else None


TINY_MOSI_SCALE = 0.04  # MOSI 1284/229/686 -> 51/9/27
TINY_MOSEI_SCALE = 0.003  # MOSEI 16326/1871/4659 -> 49/8/14


@pytest.fixture(scope="session", autouse=True)
def isolated_environment(tmp_path_factory):
    root = tmp_path_factory.mktemp("dlf-env")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DLF_CACHE", str(root / "cache"))
        mp.setenv("DLF_HOME", str(root / "home"))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("DLF_DATA_ROOT", raising=False)
        yield root


def _tiny(tmp_path_factory, corpus: str, aligned: bool, scale: float) -> Path:
    from dlf.data.synthetic import write_synthetic

    kind = "aligned" if aligned else "unaligned"
    out = tmp_path_factory.mktemp("data") / f"tiny_{corpus}_{kind}.pkl"
    return write_synthetic(corpus, out, aligned=aligned, scale=scale, seed=0)


@pytest.fixture(scope="session")
def tiny_mosi(tmp_path_factory) -> Path:
    """Aligned synthetic MOSI pickle, 51/9/27 samples."""
    return _tiny(tmp_path_factory, "mosi", True, TINY_MOSI_SCALE)


@pytest.fixture(scope="session")
def tiny_mosi_unaligned(tmp_path_factory) -> Path:
    """Unaligned synthetic MOSI pickle (audio 375, vision 500 steps, with lengths), 51/9/27 samples."""
    return _tiny(tmp_path_factory, "mosi", False, TINY_MOSI_SCALE)


@pytest.fixture(scope="session")
def tiny_mosei(tmp_path_factory) -> Path:
    """Aligned synthetic MOSEI pickle (widths 768/74/35), 49/8/14 samples."""
    return _tiny(tmp_path_factory, "mosei", True, TINY_MOSEI_SCALE)


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store with its schema, made once per session."""
    from dlf.run.tracking import client

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    client(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def new_store(empty_mlflow_db):
    """``make(path)``: a fresh empty store at ``path`` (a copy of :func:`empty_mlflow_db`), its URI.

    Creating a store runs MLflow's schema migrations, about 1 s of CPU each time; a copy takes
    milliseconds. What the tests check of a store (runs, tags, claims) starts from the same schema.
    """
    import shutil

    def make(path: Path) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(empty_mlflow_db, path)
        return f"sqlite:///{path}"

    return make


@pytest.fixture
def mmsa_variant(tmp_path):
    """``make(src, mutate, name)``: a copy of pickle ``src`` after ``mutate(dict)``, for bad-input tests.

    ``mutate`` edits the dict in place and returns None, or returns the object to write instead.
    """
    import pickle

    def make(src: Path, mutate, name: str = "variant.pkl") -> Path:
        with open(src, "rb") as fh:
            data = pickle.load(fh)
        replacement = mutate(data)
        data = data if replacement is None else replacement
        out = tmp_path / name
        with open(out, "wb") as fh:
            pickle.dump(data, fh, protocol=4)
        return out

    return make


@pytest.fixture
def tiny_vocab(mmsa_variant):
    """``make(src, name)``: a copy of pickle ``src`` whose BERT token ids are below 512, the vocabulary of
    the tests' small BERTs (the synthetic ids are bert-base's)."""
    def below_512(data):
        for split in ("train", "valid", "test"):
            data[split]["text_bert"][:, 0] %= 512

    return lambda src, name: mmsa_variant(src, below_512, name)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests (small models run no faster on two), restored after."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# Servers and processes of the cluster tests (test_cluster.py, test_ray.py): started only where a test asks.
@pytest.fixture(scope="module")
def pg():
    """A PostgreSQL server of the module's own (the module skips first where there is none)."""
    from servers import PostgresServer

    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mlflow_server():
    """An ``mlflow server`` of the module's own."""
    from servers import MlflowServer

    server = MlflowServer().start()
    yield server
    server.stop()


@pytest.fixture
def reaper():
    """Processes a test started; any still running at the end (a failed assertion) are killed."""
    import subprocess

    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
