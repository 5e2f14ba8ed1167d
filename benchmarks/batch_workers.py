"""Batch workers as threads against forked processes, interleaved epoch by epoch in one process.

Trains the full model on synthetic MOSI at the real split sizes (1284 / 229 / 686, official protocol)
with ``dlf.train._train_epoch``, alternating the two pools every epoch (thread, process, process,
thread, ...) on the same model and optimizer, so that both see the same phases of a shared machine.
After each epoch it times the validation and a test evaluation with the same pool. Prints every
epoch, the medians per kind, and the process / thread ratio of the medians.

    python benchmarks/batch_workers.py [--epochs 8] [--workers 2] [--variant full]
"""
from __future__ import annotations

import argparse
import gc
import statistics
import time

import torch

from dlf.study.catalogue import get_variant, variant_config
from dlf.data.mmsa import load_dataset
from dlf.train.evaluation import SplitTensors, evaluate
from dlf.forkpool import fork_available
from dlf.models.dlf.model import build_model
from dlf.train.loop import Runtime, _batch_pool, _train_epoch, seed_everything

PARTS = ("train", "valid", "test")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=8, help="epochs per kind (default 8)")
    ap.add_argument("--workers", type=int, default=2, help="workers of each pool, one thread each (default 2)")
    ap.add_argument("--variant", default="full")
    args = ap.parse_args()
    gc.freeze()  # as the CLI does after its imports (dlf.startup): collections skip those objects
    if not fork_available():
        raise SystemExit("error: forked batch workers need os.fork (Linux)")
    cfg = variant_config("mosi", get_variant(args.variant), {})
    dataset = load_dataset("synthetic-mosi", cfg.data)
    seed_everything(cfg.seed)
    model = build_model(cfg, dataset.dims, dataset.seq_lens)
    splits = {name: SplitTensors.from_split(dataset.splits[name], "features", "cpu") for name in PARTS}
    pools = {}
    for kind in ("threads", "processes"):  # as the trainer builds them; processes last (the fork copies)
        torch.set_num_threads(args.workers)  # the budget: one thread per worker
        runtime = Runtime(device="cpu", batch_workers=args.workers, batch_processes=kind == "processes")
        pools[kind] = _batch_pool(model, cfg, torch.device("cpu"), runtime, tuple(splits.values()))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.train.lr)
    shuffle = torch.Generator().manual_seed(cfg.seed)
    print(f"torch {torch.__version__}, {args.variant}, {args.workers} workers x 1 thread, synthetic MOSI "
          f"{' / '.join(str(s.n) for s in splits.values())}")
    print(f"{'epoch':>5} {'kind':>10} {'train s':>8} {'valid s':>8} {'test s':>7}")
    seconds: dict[str, list[tuple[float, ...]]] = {kind: [] for kind in pools}
    try:
        for epoch in range(1, 2 * args.epochs + 1):
            kind = ("threads", "processes")[(epoch // 2) % 2]  # t p p t t p p t ...: a drift cancels
            seconds[kind].append(_epoch(model, optimizer, params, cfg, splits, shuffle, epoch, pools[kind]))
            print(f"{epoch:>5} {kind:>10} " + " ".join(f"{s:{w}.2f}" for s, w in zip(seconds[kind][-1], (8, 8, 7))),
                  flush=True)
    finally:
        for pool in pools.values():
            pool.close()
    medians = {kind: [statistics.median(s[i] for s in rows) for i in range(3)] for kind, rows in seconds.items()}
    for kind, (train, valid, test) in medians.items():
        print(f"median {kind:>10}: train {train:.2f} s, valid {valid:.2f} s, test {test:.2f} s, "
              f"official-style epoch {train + valid + test:.2f} s")
    print("processes / threads: " + ", ".join(
        f"{part} {p / t:.3f}" for part, p, t in zip(PARTS, medians["processes"], medians["threads"])))


def _epoch(model, optimizer, params, cfg, splits, shuffle, epoch: int, pool) -> tuple[float, float, float]:
    stamps = [time.perf_counter()]
    _train_epoch(model, optimizer, params, cfg, splits["train"], shuffle, epoch, pool, None)
    stamps.append(time.perf_counter())
    for name in ("valid", "test"):
        evaluate(model, splits[name], cfg.train.eval_batch_size, pool=pool)
        stamps.append(time.perf_counter())
    return tuple(b - a for a, b in zip(stamps, stamps[1:]))


if __name__ == "__main__":
    main()
