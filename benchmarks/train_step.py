"""Training and evaluation speed of every catalogue variant at MOSI and MOSEI shapes (features mode).

Runs the trainer's own code on random tensors of the real shapes: one gradient-accumulation window
(``train.accumulation`` micro-batches of 16 through ``dlf.train.loop._train_epoch``: forward, loss,
gradients, in-order accumulation and value clipping, one optimizer step) and evaluation batches of
64 through ``dlf.train.evaluation.predict``, for each lane count of ``--lanes`` (micro-batches of one
window computed concurrently on threads, one intra-op thread each: dlf.train.lanes). Prints the
median time per micro-step and per evaluation batch, and the estimated wall time of a full epoch
(MOSI: 81 micro-steps + 229 + 686 evaluation samples; MOSEI: 1021 + 1871 + 4659).

Baseline in the same run (CPU): the official model, loss and loop re-created op for op
(benchmarks/official_style.py, checked against the official outputs) on the same shapes and thread
budget, and the full model's micro-step as a fraction of it. Target: at most half.
Reference, the official code on a 2-core CPU (its model and loss, identity text encoder, 2 threads):
280 ms per micro-step, 156 ms per evaluation batch of 64, about 25 s per MOSI epoch.
Benchmark one process at a time: two torch processes on the same cores slow each other down badly.

    python benchmarks/train_step.py [--threads 2] [--repeats 5] [--variants full,wo_lfa]
                                    [--corpora mosi,mosei] [--lanes 1,2] [--device cpu] [--profile]
                                    [--no-baseline]
"""
from __future__ import annotations

import argparse
import gc
import math
import statistics
import time

import torch
from official_style import (  # this folder
    OfficialStyleDLF,
    official_evaluate,
    official_train_epoch,
)

from dlf.study.catalogue import REFERENCE_SHAPES, get_variant, load_catalogue, variant_config
from dlf.errors import DLFError
from dlf.train.evaluation import SplitTensors, predict
from dlf.models.dlf.losses import loss_terms
from dlf.models.dlf.model import build_model
from dlf.train.loop import Runtime, _lane_pool, _train_epoch, torch_settings

SPLITS = {"mosi": (1284, 229, 686), "mosei": (16326, 1871, 4659)}  # train / valid / test samples
BATCH, EVAL_BATCH = 16, 64


def random_split(corpus: str, n: int, device: torch.device, gen: torch.Generator) -> SplitTensors:
    dims, lens = REFERENCE_SHAPES[corpus]
    x = [torch.randn(n, lens[m], dims[m], generator=gen).to(device) for m in ("l", "a", "v")]
    labels = (torch.randint(-15, 16, (n,), generator=gen) / 5).to(device)  # the 0.2 label grid of MOSI
    return SplitTensors(*x, labels)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_it(fn, repeats: int, device: torch.device, warmup: int = 1) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    wall = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        wall.append(time.perf_counter() - start)
    return statistics.median(wall)


def bench_variant(cfg, corpus: str, repeats: int, device: torch.device, lanes: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    dims, lens = REFERENCE_SHAPES[corpus]
    model = build_model(cfg, dims, lens).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.train.lr)
    acc = cfg.train.accumulation
    train, evals = random_split(corpus, BATCH * acc, device, gen), random_split(corpus, EVAL_BATCH * 4, device, gen)
    runtime = Runtime(device=str(device), lanes=lanes)
    threads = torch.get_num_threads()
    with torch_settings(device, threads), _lane_pool(model, cfg, device, runtime) as pool:
        shuffle = torch.Generator().manual_seed(0)
        window = time_it(lambda: _train_epoch(model, opt, params, cfg, train, shuffle, 1, pool, None), repeats, device)
        ev = time_it(lambda: predict(model, evals, EVAL_BATCH, pool), repeats, device) / 4
        setting = f"{pool.lanes}x{pool.threads or threads}"
    return _figures(corpus, window / acc, ev, setting)


def bench_official(cfg, corpus: str, repeats: int) -> dict[str, float]:
    """The official-style baseline on the same shapes (CPU, the current thread budget): one window of
    the official loop (backward, clipping, a step per window) and evaluation batches of 64."""
    gen, cpu = torch.Generator().manual_seed(0), torch.device("cpu")
    torch.manual_seed(0)
    dims, lens = REFERENCE_SHAPES[corpus]
    model = OfficialStyleDLF(cfg.model, dims, lens)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    acc, t = cfg.train.accumulation, cfg.train
    train, evals = random_split(corpus, BATCH * acc, cpu, gen), random_split(corpus, EVAL_BATCH * 4, cpu, gen)
    batches = torch.arange(train.n).split(BATCH)
    window = time_it(lambda: official_train_epoch(model, opt, train, batches, acc, t.clip_value, cfg.loss.ortho_chunk),
                     repeats, cpu)
    ev = time_it(lambda: official_evaluate(model, evals, EVAL_BATCH), repeats, cpu) / 4
    return _figures(corpus, window / acc, ev, f"1x{torch.get_num_threads()}")


def _figures(corpus: str, micro: float, ev: float, setting: str) -> dict:
    """ms per micro-step and per eval batch, and the epoch they add up to (seconds)."""
    n_train, n_val, n_test = SPLITS[corpus]
    n_eval = math.ceil(n_val / EVAL_BATCH) + math.ceil(n_test / EVAL_BATCH)
    return {"micro": 1000 * micro, "eval": 1000 * ev, "epoch": math.ceil(n_train / BATCH) * micro + n_eval * ev,
            "setting": setting}


def profile_full(corpus: str, device: torch.device, rows: int = 25) -> None:
    """Top operators of a few training micro-steps of the full model (self time)."""
    from torch.profiler import ProfilerActivity, profile

    cfg = variant_config(corpus, load_catalogue()["full"])
    dims, lens = REFERENCE_SHAPES[corpus]
    model = build_model(cfg, dims, lens).to(device).train()
    data = random_split(corpus, BATCH, device, torch.Generator().manual_seed(0))
    x, labels = (data.text, data.audio, data.vision), data.labels
    for _ in range(3):
        loss_terms(model(*x), labels, cfg)["total"].backward()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(5):
            loss_terms(model(*x), labels, cfg)["total"].backward()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=rows))
    n_ops = sum(e.count for e in prof.key_averages() if not e.key.startswith("autograd::"))
    print(f"operator calls per micro-step (all levels): {n_ops / 5:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch thread budget (default 2)")
    ap.add_argument("--repeats", type=int, default=5, help="timed accumulation windows per measurement (median)")
    ap.add_argument("--variants", default="", help="comma-separated catalogue names (default: all features-mode)")
    ap.add_argument("--corpora", default="mosi,mosei", help="dataset shapes: mosi, mosei or both")
    ap.add_argument("--lanes", default="1,2", help="lane counts to compare (concurrent micro-batches)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--profile", action="store_true", help="also print a torch.profiler table of the full model")
    ap.add_argument("--no-baseline", action="store_true", help="skip the official-style baseline rows")
    args = ap.parse_args()
    gc.freeze()  # as the CLI does after its imports (dlf.startup): collections skip those objects

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          (args.device if args.device != "auto" else "cpu"))
    catalogue = load_catalogue()
    names = [n for n in args.variants.split(",") if n] or list(catalogue)
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f", thread budget {torch.get_num_threads()}, repeats {args.repeats}, "
          f"micro-batch {BATCH}, eval batch {EVAL_BATCH}")
    print(f"{'corpus':7} {'variant':16} {'lanes':>8} {'micro-step ms':>14} {'eval-64 ms':>11} {'epoch s':>8}")
    ratios = []
    for corpus in args.corpora.split(","):
        base = None
        if device.type == "cpu" and not args.no_baseline:
            base = bench_official(variant_config(corpus, get_variant("full", catalogue)), corpus, args.repeats)
            _row(corpus, "official-style", base)
        for name in names:
            cfg = variant_config(corpus, get_variant(name, catalogue))
            if cfg.model.text_encoder != "features":
                print(f"{corpus:7} {name:16} skipped: text encoder {cfg.model.text_encoder} (features mode only)")
                continue
            for lanes in map(int, args.lanes.split(",")):
                r = bench_variant(cfg, corpus, args.repeats, device, lanes)
                _row(corpus, name, r)
                if base is not None and name == "full":
                    ratios.append(f"{corpus} {r['setting']} {r['micro'] / base['micro']:.2f}")
    print("official code (2-core CPU, 2 threads): MOSI micro-step 280 ms, eval-64 156 ms, epoch ~25 s")
    if ratios:
        print("full model's micro-step / official-style micro-step, same run (target <= 0.5): " + ", ".join(ratios))
    if args.profile:
        profile_full(args.corpora.split(",")[0], device)


def _row(corpus: str, name: str, r: dict) -> None:
    print(f"{corpus:7} {name:16} {r['setting']:>8} {r['micro']:14.1f} {r['eval']:11.1f} {r['epoch']:8.2f}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except DLFError as err:
        raise SystemExit(f"error: {err}") from None
