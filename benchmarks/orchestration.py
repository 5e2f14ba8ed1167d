"""Orchestration overhead of ``dlf-ablate run``: wall time against the training time of its runs.

    python benchmarks/orchestration.py                       # 4 variants x 2 seeds, quickstart settings
    python benchmarks/orchestration.py --seeds 3 --epochs 5 --workers 2

Runs a small synthetic-MOSI study with the real command (a subprocess, as a user would), then:
- wall time of ``run`` against the sum of its runs' ``train_seconds`` (the trainer's epoch loop,
  validation included). Overhead = everything else: interpreter start-up and imports, expansion,
  data loading, model construction, test evaluation, MLflow writes, checkpoints. Target < 5%.
- the same with the fixed start-up cost (measured as the cached re-run) taken out: the per-run cost;
- the wall time of a fully cached re-run (it must train nothing and return within seconds).
Everything lives in a temporary DLF_HOME that is removed afterwards; the synthetic data is
generated (and timed) before the measured run.
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


def timed_run(study: Path, env: dict, args: argparse.Namespace) -> float:
    cmd = [sys.executable, "-c", "from dlf.cli import main; main()", "run", str(study), "--workers", str(args.workers)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"run failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return wall


def train_seconds(uri: str) -> tuple[float, int]:
    from dlf.tracking import client, finished_keys

    c = client(uri)
    exp = c.get_experiment_by_name("orchestration-benchmark")
    runs = finished_keys(c, exp.experiment_id).values()
    return sum(r.data.metrics["train_seconds"] for r in runs), len(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", default=VARIANTS)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--scale", type=float, default=0.1)
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
        from dlf.data import resolve_dataset

        start = time.perf_counter()
        resolve_dataset("synthetic-mosi", build_config("mosi", ("benchmark", {"data.scale": args.scale})).data)
        print(f"synthetic data ready in {time.perf_counter() - start:.1f} s (not counted)")
        wall = timed_run(study, env, args)
        trained, n = train_seconds(f"sqlite:///{home}/mlflow.db")
        cached = timed_run(study, env, args)
        report(wall, trained, n, cached, args)


def report(wall: float, trained: float, n: int, cached: float, args: argparse.Namespace) -> None:
    par = f" ({args.workers} workers: training seconds summed over workers)" if args.workers > 1 else ""
    print(f"runs: {n}, workers: {args.workers}{par}")
    print(f"run wall time:              {wall:8.1f} s")
    print(f"sum of train_seconds:       {trained:8.1f} s")
    busy = wall * args.workers
    print(f"overhead, all included:     {100 * (busy - trained) / busy:8.1f} %   (target < 5%)")
    per_run = (busy - cached * args.workers - trained) / busy
    print(f"overhead, start-up removed: {100 * per_run:8.1f} %   (per-run cost: data, model, test, MLflow, checkpoint)")
    print(f"fully cached re-run:        {cached:8.1f} s   (start-up, expansion, one store query)")


if __name__ == "__main__":
    main()
