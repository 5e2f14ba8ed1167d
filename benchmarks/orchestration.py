"""Orchestration overhead of ``dlf-ablate run``: wall time against the compute time of its runs.

    python benchmarks/orchestration.py                       # 4 variants x 2 seeds, ~20 s runs
    python benchmarks/orchestration.py --seeds 3 --epochs 8 --workers 2 --threads 1

Runs a small synthetic-MOSI study with the real command (a subprocess, as a user would), then:
- wall time of ``run`` against the sum of its runs' ``run_seconds`` (the trainer's own compute:
  building the model, the epoch loop with validation, the one test evaluation). Overhead =
  everything else: interpreter start-up and imports, expansion, store set-up, claims, data loading,
  MLflow writes, checkpoints. Target < 5%.
- that overhead split into a fixed part (once per invocation: start-up, imports, store, parents) and
  a per-run part (claim, data, MLflow writes, checkpoint), so that other study sizes can be judged:
  overhead % ~ (fixed + runs x per_run) / wall;
- the wall time of a fully cached re-run (it must train nothing and return within seconds).
Everything lives in a temporary DLF_HOME that is removed afterwards. Two one-time costs are
paid (and timed) before the measured run: generating the synthetic data, and creating the new
SQLite store (MLflow's schema migrations, once per store, not per study).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

VARIANTS = ["full", "wo_lr", "wo_lfa", "wo_hp"]


def study_file(folder: Path, args: argparse.Namespace) -> Path:
    body = {
        "name": "orchestration-benchmark", "datasets": ["synthetic-mosi"], "variants": args.variants,
        "seeds": list(range(1, args.seeds + 1)),
        "set": {"data.scale": args.scale, "train.max_epochs": args.epochs, "train.patience": args.epochs,
                "train.accumulation": 1, "train.lr": 0.001},
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def timed(study: Path, env: dict, extra: list[str]) -> float:
    """Wall seconds of ``dlf-ablate run STUDY *extra`` in a subprocess (also used by ray_throughput.py)."""
    cmd = [sys.executable, "-c", "from dlf.cli import main; main()", "run", str(study), *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(extra)}: run failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return wall


def timed_run(study: Path, env: dict, args: argparse.Namespace) -> float:
    threads = ["--threads", str(args.threads)] if args.threads else []
    return timed(study, env, ["--workers", str(args.workers), *threads])


def run_times(uri: str) -> tuple[float, float, float, int]:
    """(sums of run_seconds and of train_seconds, sum of seed-run durations in MLflow, number of runs)."""
    from dlf.run.tracking import client, finished_keys

    c = client(uri)
    exp = c.get_experiment_by_name("orchestration-benchmark")
    runs = list(finished_keys(c, exp.experiment_id).values())
    trained = sum(r.data.metrics["run_seconds"] for r in runs)
    epochs = sum(r.data.metrics["train_seconds"] for r in runs)
    inside = sum((r.info.end_time - r.info.start_time) / 1000 for r in runs)
    return trained, epochs, inside, len(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", default=VARIANTS)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--scale", type=float, default=0.25, help="synthetic-MOSI size (0.25: 321 training samples)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch threads per worker (default cores // workers)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dlf-bench-") as tmp:
        home = Path(tmp)
        env = dict(os.environ, DLF_HOME=str(home), DLF_CODE_VERSION=f"benchmark-{time.time_ns()}")
        env.pop("MLFLOW_TRACKING_URI", None)
        os.environ.update(DLF_HOME=env["DLF_HOME"], DLF_CODE_VERSION=env["DLF_CODE_VERSION"])
        study = study_file(home, args)
        from dlf.config import build_config
        from dlf.data.mmsa import resolve_dataset

        from dlf.run.tracking import client

        start = time.perf_counter()
        resolve_dataset("synthetic-mosi", build_config("mosi", ("benchmark", {"data.scale": args.scale})).data)
        print(f"synthetic data ready in {time.perf_counter() - start:.1f} s (once; not counted)")
        start = time.perf_counter()
        client(f"sqlite:///{home}/mlflow.db")
        print(f"new tracking store created in {time.perf_counter() - start:.1f} s (once per store; not counted)")
        wall = timed_run(study, env, args)
        trained, epochs, inside, n = run_times(f"sqlite:///{home}/mlflow.db")
        cached = timed_run(study, env, args)
        report(wall, trained, epochs, inside, n, cached, args)


def report(wall: float, trained: float, epochs: float, inside: float, n: int, cached: float,
           args: argparse.Namespace) -> None:
    busy = wall * args.workers  # worker-seconds available; compute seconds are summed over workers
    fixed, per_run = busy - inside, (inside - trained) / n
    print(f"runs: {n}, workers: {args.workers}")
    print(f"run wall time:               {wall:8.1f} s")
    print(f"sum of run_seconds:          {trained:8.1f} s   ({trained / n:.1f} s per run)")
    print(f"overhead, all included:      {100 * (busy - trained) / busy:8.1f} %   (target < 5%)")
    print(f"  (against the epoch loops alone, train_seconds {epochs:.1f} s: {100 * (busy - epochs) / busy:.1f} %)")
    print(f"  per run:                   {per_run:8.2f} s   (claim, data, MLflow writes, checkpoint)")
    print(f"  fixed, once:               {fixed:8.1f} s   (start-up and imports, expansion, store, parents)")
    print(f"fully cached re-run:         {cached:8.1f} s   (trains nothing)")


if __name__ == "__main__":
    main()
