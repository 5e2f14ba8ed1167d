"""Wall time of real MOSI-sized training epochs: the trainer end to end, not an estimate, beside the official work.

Trains the full model (features mode, official protocol: micro-batches of 16, accumulation 10) on
synthetic MOSI at the real split sizes (1284 / 229 / 686) with ``dlf.train.loop.train_run`` for a few
epochs, once per lane count (concurrent micro-batches, dlf.train.lanes), and prints per epoch the training + validation seconds, the seconds
of one test evaluation, and their sum (an epoch as the official trainer runs it: it also tests every
epoch) for the fastest and the median epoch after the first.

The baseline, interleaved: after each of our epochs but the last, one official-style epoch
(benchmarks/official_style.py: the official model, loss and loop re-created op for op and checked
against the official outputs) on the same data and thread budget, in a process of its own while ours
wait: training, then validation and test evaluation. Its first epoch is its warm-up: the official
loop keeps every micro-batch's output, and with it ~80 MB of its autograd graph, until the epoch
ends, so its first epoch grows the heap (~20k page faults per micro-batch), and it speeds up over a
few epochs. The ratio of its fastest later epoch to our median later epoch is the figure that
survives this machine's drift of 10-20% over a day; like every choice made for the baseline, it
understates the official time.

Reference, the official code on a 2-core CPU: about 25 s per MOSI epoch. Target: under 10 s, i.e. at
least 2.5x faster than the official code.

    python benchmarks/epoch.py [--epochs 4] [--lanes 2] [--threads 2] [--variant full] [--device cpu]
                               [--no-baseline]
"""
from __future__ import annotations

import argparse
import gc
import multiprocessing
import statistics
import time

import torch
from official_style import (  # this folder
    OfficialStyleDLF,
    official_evaluate,
    official_train_epoch,
)

from dlf.study.catalogue import get_variant, variant_config
from dlf.data.mmsa import load_dataset
from dlf.train.evaluation import SplitTensors, evaluate
from dlf.train.loop import Runtime, _lane_pool, torch_settings, train_run


def measure(cfg, dataset, lanes: int | None, threads: int, device: str, between=None) -> tuple[list[float], float]:
    """(seconds of each epoch's training + validation, seconds of one test evaluation); ``between()``
    runs after each epoch but the last, off the clock (the lanes wait meanwhile)."""
    starts, ends = [time.perf_counter()], []

    def on_epoch(epoch: int, metrics: dict) -> None:
        ends.append(_synced(device))
        if between is not None and epoch < cfg.train.max_epochs:
            between()
        starts.append(time.perf_counter())

    runtime = Runtime(device=device, threads=threads, progress=False, lanes=lanes)
    result = train_run(cfg, dataset, runtime, on_epoch=on_epoch)
    return [e - s for s, e in zip(starts, ends)], _test_seconds(cfg, dataset, result, runtime)


def _synced(device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


def _test_seconds(cfg, dataset, result, runtime: Runtime) -> float:
    """One test evaluation of the trained weights, on the trainer's own lanes."""
    from dlf.models.dlf.model import build_model

    device = torch.device(runtime.device)
    model = build_model(cfg, dataset.dims, dataset.seq_lens).to(device)
    model.load_state_dict(result.state_dict)
    test = SplitTensors.from_split(dataset.splits["test"], "features", device)
    with torch_settings(device, runtime.threads), _lane_pool(model, cfg, device, runtime) as pool:
        start = _synced(runtime.device)
        evaluate(model, test, cfg.train.eval_batch_size, pool=pool)
        return _synced(runtime.device) - start


class OfficialBaseline:
    """Official-style epochs on ``dataset`` (CPU, ``threads`` threads): 81 micro-batches of 16 through the
    official loop, then validation and test evaluation in batches of 64 (the official trainer tests every
    epoch). They run in a forked child of their own, so that the official loop's heap (several GB at its
    peak) stays out of the process that trains ours; ``epoch()`` waits for one and records its seconds."""

    def __init__(self, cfg, dataset, threads: int):
        ctx = multiprocessing.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_baseline_child, args=(child, cfg, dataset, threads), daemon=True)
        self.proc.start()
        child.close()
        self.seconds: list[tuple[float, float]] = []  # (training, validation + test) per epoch

    def epoch(self) -> None:
        self.conn.send("epoch")
        self.seconds.append(self.conn.recv())  # EOFError if the child died: the benchmark stops

    def close(self) -> None:
        self.conn.close()  # the child's recv ends: it exits
        self.proc.join(30)


def _baseline_child(conn, cfg, dataset, threads: int) -> None:
    torch.manual_seed(cfg.seed)
    model = OfficialStyleDLF(cfg.model, dataset.dims, dataset.seq_lens)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)  # official: defaults otherwise
    splits = {k: SplitTensors.from_split(dataset.splits[k], "features", "cpu") for k in ("train", "valid", "test")}
    shuffle, t = torch.Generator().manual_seed(cfg.seed), cfg.train
    with torch_settings(torch.device("cpu"), threads):
        while True:
            try:
                conn.recv()
            except EOFError:
                return
            batches = torch.randperm(splits["train"].n, generator=shuffle).split(t.batch_size)
            start = time.perf_counter()
            official_train_epoch(model, optimizer, splits["train"], batches, t.accumulation, t.clip_value,
                                 cfg.loss.ortho_chunk)
            trained = time.perf_counter()
            for split in ("valid", "test"):
                official_evaluate(model, splits[split], t.eval_batch_size)
            conn.send((trained - start, time.perf_counter() - trained))


def _baseline_row(seconds: list[tuple[float, float]]) -> float:
    """Print the baseline's epochs; return its fastest epoch after the first (in seconds)."""
    train, evals = (", ".join(f"{x[i]:.2f}" for x in seconds) for i in (0, 1))
    steady = [a + b for a, b in seconds[1:] or seconds]  # the first epoch warms up
    print(f"{'official':>8} {train:>20} {evals:>12} {min(steady):32.2f} {statistics.median(steady):7.2f}"
          f"  (official-style: training | validation + test)", flush=True)
    return min(steady)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lanes", default="2", help="lane counts to compare in one process (concurrent micro-batches)")
    ap.add_argument("--threads", type=int, default=2, help="torch thread budget (default 2)")
    ap.add_argument("--variant", default="full")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (lanes apply to the CPU only)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the interleaved official-style epochs")
    args = ap.parse_args()
    gc.freeze()  # as the CLI does after its imports (dlf.startup): collections skip those objects
    cfg = variant_config("mosi", get_variant(args.variant),
                         {"train.max_epochs": args.epochs, "train.patience": args.epochs + 1})
    dataset = load_dataset("synthetic-mosi", cfg.data)
    sizes = " / ".join(str(len(dataset.splits[s].ids)) for s in ("train", "valid", "test"))
    print(f"torch {torch.__version__}, {args.device}, thread budget {args.threads}, {args.variant}, "
          f"synthetic MOSI {sizes}, accumulation {cfg.train.accumulation}")
    print(f"{'lanes':>8} {'epoch (train+val) s':>20} {'test eval s':>12} "
          f"{'official-style epoch s: fastest':>32} {'median':>7}")
    with_baseline = args.device == "cpu" and not args.no_baseline and args.epochs > 1
    ratios = []
    for spec in args.lanes.split(","):
        baseline = OfficialBaseline(cfg, dataset, args.threads) if with_baseline else None
        epochs, test = measure(cfg, dataset, int(spec), args.threads, args.device,
                               baseline.epoch if baseline else None)
        steady = epochs[1:] or epochs  # the first epoch warms up
        shown = ", ".join(f"{e:.2f}" for e in epochs)
        ours = statistics.median(steady) + test
        print(f"{spec:>8} {shown:>20} {test:12.2f} {min(steady) + test:32.2f} {ours:7.2f}", flush=True)
        if baseline is not None:
            baseline.close()
            ratios.append(f"{_baseline_row(baseline.seconds) / ours:.2f}x ({spec})")
    print("official code (2-core CPU): ~25 s per MOSI epoch; target < 10 s, i.e. >= 2.5x faster")
    if ratios:
        print("same run, interleaved: official-style fastest epoch / our median epoch = " + ", ".join(ratios))


if __name__ == "__main__":
    main()
