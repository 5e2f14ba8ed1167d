"""Helpers shared by the orchestration tests: tiny study files and MLflow/SQLite queries."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import yaml

# A narrow one-level DLF: about 0.5 s per 2-epoch run on the 51-sample tiny MOSI.
TINY_SET = {
    "model.d_model": 10, "model.n_heads": 2, "loss.ortho_chunk": 10, "model.n_levels": 1,
    "model.mem_levels": 1, "train.max_epochs": 2, "train.accumulation": 1,
}
CODE_VERSION = "test-code-version"


def write_study(folder: Path, dataset: Path | str, name: str = "tiny", variants=("full", "wo_lr"),
                seeds=(1, 2), extra: dict | None = None, file: str | None = None) -> Path:
    body = {"name": name, "datasets": [str(dataset)], "variants": list(variants), "seeds": list(seeds),
            "set": dict(TINY_SET)}
    body.update(extra or {})
    path = Path(folder) / (file or f"{name}.yaml")
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for a ``dlf-ablate`` subprocess: own home, pinned code version, 1 thread."""
    env = dict(os.environ, DLF_HOME=str(home), DLF_CODE_VERSION=CODE_VERSION, OMP_NUM_THREADS="1", COLUMNS="200")
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra)
    return env


def start_cli(args: list[str], env: dict, **kw) -> subprocess.Popen:
    code = "import sys; from dlf.cli import main; sys.argv[0] = 'dlf-ablate'; main()"
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def seed_runs(db: Path) -> list[tuple[str, str, str]]:
    """(run_uuid, status, run key) of every seed run, read straight from the SQLite store."""
    return _query(db, "SELECT r.run_uuid, r.status, k.value FROM runs r "
                      "JOIN tags l ON l.run_uuid = r.run_uuid AND l.key = 'dlf.level' AND l.value = 'seed' "
                      "JOIN tags k ON k.run_uuid = r.run_uuid AND k.key = 'dlf.run_key'")


def parent_runs(db: Path) -> list[tuple[str, str]]:
    """(run_uuid, status) of every parent run."""
    return _query(db, "SELECT r.run_uuid, r.status FROM runs r "
                      "JOIN tags l ON l.run_uuid = r.run_uuid AND l.key = 'dlf.level' AND l.value = 'parent'")


def _query(db: Path, sql: str) -> list[tuple]:
    if not Path(db).is_file():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        con.close()
