"""Runs per minute through Ray against the local process pool, on the same small study.

    python benchmarks/ray_throughput.py                      # 4 variants x 2 seeds = 8 tiny runs
    python benchmarks/ray_throughput.py --epochs 5 --scale 0.2

For 1 and 2 runs at once, the real command runs the study (a subprocess, as a user would) twice
in fresh stores: ``run STUDY --workers N`` (the local pool) and ``run STUDY --ray local --workers
N`` (a Ray instance started for the command on this machine), both with ``--threads 1``. Then a
fully cached re-run of each, which is the fixed cost of an invocation (start-up, imports; for Ray
also starting the instance and connecting). Printed: wall times, runs per minute, Ray's overhead
against the pool (in total and per run after taking the fixed costs out). Target: within 5 % of
the local pool's wall time. Everything lives in temporary folders, removed afterwards.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import yaml
from orchestration import timed  # this folder

VARIANTS = ["full", "wo_lr", "wo_lfa", "wo_hp"]
# A narrow one-level DLF: tiny runs, so that what is measured is the orchestration around them.
TINY_MODEL = {"model.d_model": 10, "model.n_heads": 2, "loss.ortho_chunk": 10, "model.n_levels": 1, "model.mem_levels": 1}


def study_file(folder: Path, args: argparse.Namespace) -> Path:
    body = {"name": "ray-benchmark", "datasets": ["synthetic-mosi"], "variants": VARIANTS,
            "seeds": list(range(1, args.seeds + 1)),
            "set": {"data.scale": args.scale, "train.max_epochs": args.epochs, "train.patience": args.epochs,
                    "train.accumulation": 1, **TINY_MODEL}}
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def measure(study: Path, base_env: dict, tmp: Path, name: str, extra: list[str]) -> tuple[float, float]:
    """(wall of the study in a fresh store, wall of a fully cached re-run)."""
    env = {**base_env, "DLF_HOME": str(tmp / name)}
    return timed(study, env, extra), timed(study, env, extra)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--scale", type=float, default=0.1, help="synthetic-MOSI size (0.1: 128 training samples)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run, the same for both (on a shared "
                    "2-core machine two-thread runs measure the other processes' load more than anything)")
    args = ap.parse_args()
    runs = len(VARIANTS) * args.seeds
    with tempfile.TemporaryDirectory(prefix="dlf-bench-") as tmp_name:
        tmp = Path(tmp_name)
        study = study_file(tmp, args)
        env = {**os.environ, "DLF_CACHE": str(tmp / "cache"), "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("MLFLOW_TRACKING_URI", None)
        timed(study, {**env, "DLF_HOME": str(tmp / "warm")}, ["--workers", "1"])  # data generated, once
        print(f"{runs} tiny runs of {args.epochs} epochs on synthetic-MOSI at scale {args.scale}, {os.cpu_count()} cores", flush=True)
        print(f"{'runs at once':>12} {'pool s':>8} {'ray s':>8} {'pool/min':>9} {'ray/min':>8} {'overhead':>9} "
              f"{'fixed pool':>10} {'fixed ray':>9} {'per run':>8}", flush=True)
        for n in (1, 2):
            same = ["--workers", str(n), "--threads", str(args.threads)]
            pool, pool_cached = measure(study, env, tmp, f"pool{n}", same)
            ray, ray_cached = measure(study, env, tmp, f"ray{n}", ["--ray", "local", *same])
            per_run = ((ray - ray_cached) - (pool - pool_cached)) / runs
            print(f"{n:>12} {pool:>8.1f} {ray:>8.1f} {runs / pool * 60:>9.1f} {runs / ray * 60:>8.1f} "
                  f"{(ray - pool) / pool:>8.1%} {pool_cached:>10.1f} {ray_cached:>9.1f} {per_run:>7.2f}s", flush=True)
    print("overhead: Ray's wall time over the pool's; fixed: a fully cached re-run (start-up; for Ray also the "
          "instance); per run: Ray's extra seconds per run once the fixed costs are taken out")


if __name__ == "__main__":
    main()
