"""What pruning buys: the same small tuning study with the median pruner and without it.

    python benchmarks/pruning.py                 # defaults: 16 trials, synthetic-MOSI at scale 0.1
    python benchmarks/pruning.py --trials 30 --max-epochs 12 --scale 0.2

Both searches use the same study, sampler seed and training seed, on synthetic-MOSI (never real
data). Prints, per pruner: trials finished (pruned among them), epochs actually trained (a pruned
trial counts the epochs it ran), the best validation MAE reached, and the wall time. Everything is
written to a temporary folder (Optuna journal and MLflow store) that is removed afterwards.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import yaml

SMALL_MODEL = {"model.d_model": 20, "model.n_heads": 2, "model.n_levels": 1, "model.mem_levels": 1,
               "loss.ortho_chunk": 10}


def overrides(args: argparse.Namespace) -> dict:
    return {"data.scale": args.scale, "train.max_epochs": args.max_epochs, "train.accumulation": 1,
            "train.patience": args.max_epochs, **(SMALL_MODEL if not args.full_model else {})}


def warm_up(args: argparse.Namespace) -> None:
    """One 1-epoch run first: data generation and lazy imports must not count against either search."""
    from dlf.config import build_config
    from dlf.data.mmsa import load_dataset
    from dlf.train.loop import Runtime, train_run

    cfg = build_config("mosi", ("benchmark", {**overrides(args), "train.max_epochs": 1}))
    train_run(cfg, load_dataset("synthetic-mosi", cfg.data), Runtime(threads=args.threads, progress=False))


def study_file(folder: Path, args: argparse.Namespace, pruner: str) -> Path:
    body = {"name": "pruning-bench", "datasets": ["synthetic-mosi"], "variants": ["full"], "seeds": [1111],
            "set": overrides(args),
            "tune": {"pruner": pruner, "pruner_startup_trials": args.startup, "pruner_warmup_epochs": args.warmup,
                     "n_startup_trials": args.startup, "sampler_seed": 0, "top_k": 1}}
    path = folder / f"bench-{pruner}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def run_one(folder: Path, args: argparse.Namespace, pruner: str) -> dict:
    import optuna

    from dlf.tune import TuneOptions, tune
    from dlf.tune.storage import open_storage

    opts = TuneOptions(study=str(study_file(folder, args, pruner)), trials=args.trials, study_name=pruner,
                       storage=str(folder / f"{pruner}.journal"), tracking_uri=f"sqlite:///{folder / 'mlflow.db'}",
                       threads=args.threads, progress=True, plots=False)
    start = time.perf_counter()
    result = tune(opts)
    seconds = time.perf_counter() - start
    study = optuna.load_study(study_name=pruner, storage=open_storage(opts.storage))
    epochs = sum(int(t.user_attrs.get("dlf.epochs", 0)) for t in study.trials if t.state.is_finished())
    return {"pruner": pruner, "finished": result.counts["finished"], "pruned": result.counts["PRUNED"],
            "epochs": epochs, "best": study.best_value, "seconds": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--max-epochs", type=int, default=8, help="every trial trains at most this many epochs")
    p.add_argument("--scale", type=float, default=0.1, help="synthetic-MOSI size as a fraction of MOSI")
    p.add_argument("--startup", type=int, default=4, help="trials before pruning (and TPE) start")
    p.add_argument("--warmup", type=int, default=2, help="epochs of each trial before it may be pruned")
    p.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 1)))
    p.add_argument("--full-model", action="store_true", help="the paper-size model instead of a small one")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="dlf-prune-bench-") as tmp:
        os.environ.setdefault("DLF_HOME", tmp)
        from dlf.run.tracking import client

        client(f"sqlite:///{Path(tmp) / 'mlflow.db'}")  # create the store first: not part of either timing
        warm_up(args)
        for pruner in ("none", "median"):
            rows.append(run_one(Path(tmp), args, pruner))
    print(f"\n{args.trials} trials x <= {args.max_epochs} epochs, synthetic-MOSI scale {args.scale}, "
          f"{'paper-size' if args.full_model else 'small'} model, median pruner after {args.startup} trials / "
          f"{args.warmup} epochs")
    print(f"{'pruner':<8} {'finished':>8} {'pruned':>6} {'epochs':>7} {'best val_mae':>13} {'seconds':>8}")
    for r in rows:
        print(f"{r['pruner']:<8} {r['finished']:>8} {r['pruned']:>6} {r['epochs']:>7} {r['best']:>13.4f} "
              f"{r['seconds']:>8.1f}")
    saved = 1 - rows[1]["epochs"] / max(1, rows[0]["epochs"])
    print(f"pruning trained {saved:.0%} fewer epochs; best value {rows[1]['best'] - rows[0]['best']:+.4f} vs no pruning")


if __name__ == "__main__":
    main()
