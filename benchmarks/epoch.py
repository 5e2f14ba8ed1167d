"""Wall time of real MOSI-sized training epochs: the trainer end to end, not an estimate.

Trains the full model (features mode, official protocol: micro-batches of 16, accumulation 10) on
synthetic MOSI at the real split sizes (1284 / 229 / 686) with ``dlf.train.train_run`` for a few
epochs, once per batch-worker setting in the same process (threads or forked processes; one after
the other, so each sees its own phase of a shared machine: benchmarks/batch_workers.py interleaves
them), and prints per epoch the training + validation seconds, the seconds of one test evaluation,
and their sum (an epoch as the official trainer runs it: it also tests every epoch) for the fastest
and the median epoch after the first.

The baseline, in the same run: official-style epochs (benchmarks/official_style.py, the official
model, loss and loop re-created op for op and checked against the official outputs) on the same data
and thread budget, one before our settings and one after, so that the two bracket ours in time; the
ratio of their mean to our median epoch is the figure that survives the machine's drift.

Reference, the official code on a 2-core CPU: about 25 s per MOSI epoch. Target: under 10 s, i.e. at
least 2.5x faster than the official code.

    python benchmarks/epoch.py [--epochs 3] [--batch-workers 2t,2p] [--threads 2] [--variant full] [--device cpu]
                               [--baseline-epochs 2]
"""
from __future__ import annotations

import argparse
import gc
import statistics
import time

import torch
from official_style import (  # this folder
    OfficialStyleDLF,
    official_evaluate,
    official_train_epoch,
)
from train_step import parse_workers

from dlf.catalogue import get_variant, variant_config
from dlf.data import load_dataset
from dlf.evaluate_loop import SplitTensors, evaluate
from dlf.train import Runtime, _batch_pool, torch_settings, train_run


def measure(cfg, dataset, workers: int, processes: bool | None, threads: int, device: str) -> tuple[list[float], float]:
    """(seconds of each epoch's training + validation, seconds of one test evaluation)."""
    stamps: list[float] = []
    start = time.perf_counter()
    runtime = Runtime(device=device, threads=threads, progress=False, batch_workers=workers, batch_processes=processes)
    result = train_run(cfg, dataset, runtime, on_epoch=lambda epoch, metrics: stamps.append(_synced(device)))
    epochs = [b - a for a, b in zip([start] + stamps, stamps)]
    return epochs, _test_seconds(cfg, dataset, result, runtime)


def _synced(device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


def _test_seconds(cfg, dataset, result, runtime: Runtime) -> float:
    """One test evaluation of the trained weights, with the trainer's own worker pool."""
    from dlf.model import build_model

    device = torch.device(runtime.device)
    model = build_model(cfg, dataset.dims, dataset.seq_lens).to(device)
    model.load_state_dict(result.state_dict)
    test = SplitTensors.from_split(dataset.splits["test"], "features", device)
    with torch_settings(device, runtime.threads), _batch_pool(model, cfg, device, runtime, (test,)) as pool:
        start = _synced(runtime.device)
        evaluate(model, test, cfg.train.eval_batch_size, pool=pool)
        return _synced(runtime.device) - start


class OfficialBaseline:
    """Official-style epochs on ``dataset`` (CPU, ``threads`` threads): 81 micro-batches of 16 through the
    official loop, then validation and test evaluation in batches of 64 (the official trainer tests every epoch)."""

    def __init__(self, cfg, dataset, threads: int):
        torch.manual_seed(cfg.seed)
        self.model = OfficialStyleDLF(cfg.model, dataset.dims, dataset.seq_lens)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.train.lr)  # official: defaults otherwise
        self.splits = {k: SplitTensors.from_split(dataset.splits[k], "features", "cpu") for k in ("train", "valid", "test")}
        self.cfg, self.threads, self.shuffle = cfg, threads, torch.Generator().manual_seed(cfg.seed)
        t = cfg.train
        with torch_settings(torch.device("cpu"), threads):  # warm-up, not timed: one micro-batch, no step
            official_train_epoch(self.model, self.optimizer, self.splits["train"], [torch.arange(t.batch_size)],
                                 t.accumulation, t.clip_value, cfg.loss.ortho_chunk)

    def epoch(self) -> tuple[float, float]:
        """(training seconds, validation + test seconds) of one epoch."""
        t = self.cfg.train
        batches = torch.randperm(self.splits["train"].n, generator=self.shuffle).split(t.batch_size)
        with torch_settings(torch.device("cpu"), self.threads):
            start = time.perf_counter()
            official_train_epoch(self.model, self.optimizer, self.splits["train"], batches, t.accumulation,
                                 t.clip_value, self.cfg.loss.ortho_chunk)
            trained = time.perf_counter()
            for split in ("valid", "test"):
                official_evaluate(self.model, self.splits[split], t.eval_batch_size)
            return trained - start, time.perf_counter() - trained


def _baseline_row(label: str, seconds: tuple[float, float]) -> None:
    train, evals = seconds
    print(f"{label:>8} {train:20.2f} {evals:12.2f} {train + evals:32.2f}  (official-style baseline: "
          f"training | validation + test)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-workers", default="2t,2p",
                    help="settings to compare in one process: N workers, as threads (Nt), processes (Np) or the default (N)")
    ap.add_argument("--threads", type=int, default=2, help="torch thread budget (default 2)")
    ap.add_argument("--variant", default="full")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (batch workers apply to the CPU only)")
    ap.add_argument("--baseline-epochs", type=int, default=2,
                    help="official-style epochs, half before our settings and half after (0: none; CPU only)")
    args = ap.parse_args()
    gc.freeze()  # as the CLI does after its imports (dlf.startup): collections skip those objects
    cfg = variant_config("mosi", get_variant(args.variant),
                         {"train.max_epochs": args.epochs, "train.patience": args.epochs + 1})
    dataset = load_dataset("synthetic-mosi", cfg.data)
    sizes = " / ".join(str(len(dataset.splits[s].ids)) for s in ("train", "valid", "test"))
    print(f"torch {torch.__version__}, {args.device}, thread budget {args.threads}, {args.variant}, "
          f"synthetic MOSI {sizes}, accumulation {cfg.train.accumulation}")
    print(f"{'workers':>8} {'epoch (train+val) s':>20} {'test eval s':>12} "
          f"{'official-style epoch s: fastest':>32} {'median':>7}")
    n_base = args.baseline_epochs if args.device == "cpu" else 0
    baseline = OfficialBaseline(cfg, dataset, args.threads) if n_base else None
    base = [baseline.epoch() for _ in range((n_base + 1) // 2)]
    for seconds in base:
        _baseline_row("official", seconds)
    ours = {}
    for spec in args.batch_workers.split(","):
        epochs, test = measure(cfg, dataset, *parse_workers(spec), args.threads, args.device)
        steady = epochs[1:] or epochs  # the first epoch warms up
        shown = ", ".join(f"{e:.2f}" for e in epochs)
        ours[spec] = statistics.median(steady) + test
        print(f"{spec:>8} {shown:>20} {test:12.2f} {min(steady) + test:32.2f} {ours[spec]:7.2f}", flush=True)
    after = [baseline.epoch() for _ in range(n_base // 2)] if baseline else []
    for seconds in after:
        _baseline_row("official", seconds)
    print("official code (2-core CPU): ~25 s per MOSI epoch; target < 10 s, i.e. >= 2.5x faster")
    if base + after:
        official = statistics.mean(sum(s) for s in base + after)
        print(f"same run: official-style epoch {official:.2f} s (mean) = "
              + ", ".join(f"{official / v:.2f}x ours ({k}, median epoch)" for k, v in ours.items()))


if __name__ == "__main__":
    main()
