"""Training and evaluation speed of every catalogue variant at MOSI and MOSEI shapes (features mode).

Prints the median time of one training micro-step (forward + loss + backward + value clipping, with
the optimizer step amortised over ``train.accumulation`` micro-steps), of one evaluation batch of 64
(wall time, and this process's CPU time, the steadier figure on a shared machine), and the
estimated wall time of a full epoch (MOSI: 81 micro-steps + 8 optimizer steps + 229 + 686
evaluation samples; MOSEI: 1021 + 102 + 1871 + 4659). Inputs are random tensors of the real shapes.

Reference, the official code on a 2-core CPU (its model and loss, identity text encoder, 2 threads):
280 ms per micro-step, 156 ms per evaluation batch of 64, about 25 s per MOSI epoch.
Benchmark one process at a time: two torch processes on the same cores slow each other down badly.

    python benchmarks/train_step.py [--threads 2] [--repeats 20] [--variants full,wo_lfa]
                                    [--families mosi,mosei] [--device cpu] [--profile]
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from dlf.catalogue import REFERENCE_SHAPES, get_variant, load_catalogue, variant_config
from dlf.errors import DLFError
from dlf.losses import loss_terms
from dlf.model import build_model

SPLITS = {"mosi": (1284, 229, 686), "mosei": (16326, 1871, 4659)}  # train / valid / test samples
BATCH, EVAL_BATCH = 16, 64


def random_batch(family: str, n: int, device: torch.device, gen: torch.Generator):
    dims, lens = REFERENCE_SHAPES[family]
    x = [torch.randn(n, lens[m], dims[m], generator=gen).to(device) for m in ("l", "a", "v")]
    labels = (torch.randint(-15, 16, (n,), generator=gen) / 5).to(device)  # the 0.2 label grid of MOSI
    return x, labels


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_it(fn, repeats: int, device: torch.device, warmup: int = 3) -> tuple[float, float]:
    """Median (wall, process CPU) milliseconds of ``fn()`` over ``repeats`` calls after ``warmup``.

    On a shared machine the CPU time of this process is the steadier figure: with 1 thread it is
    close to the wall time the step would take on an idle core (with N threads it sums them).
    """
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        _sync(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        wall.append(1000 * (time.perf_counter() - start))
        cpu.append(1000 * (time.process_time() - start_cpu))
    return statistics.median(wall), statistics.median(cpu)


def bench_variant(cfg, family: str, repeats: int, device: torch.device) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    dims, lens = REFERENCE_SHAPES[family]
    model = build_model(cfg, dims, lens).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.train.lr)
    train_x, labels = random_batch(family, BATCH, device, gen)
    eval_x, _ = random_batch(family, EVAL_BATCH, device, gen)

    def micro_step():
        model.train()
        loss_terms(model(*train_x), labels, cfg)["total"].backward()
        torch.nn.utils.clip_grad_value_(params, cfg.train.clip_value)

    def opt_step():
        opt.step()
        opt.zero_grad(set_to_none=False)

    def eval_batch():
        model.eval()
        with torch.inference_mode():
            model(*eval_x)

    (micro, micro_cpu), (step, _), (ev, ev_cpu) = (time_it(f, repeats, device)
                                                   for f in (micro_step, opt_step, eval_batch))
    n_train, n_val, n_test = SPLITS[family]
    n_micro = math.ceil(n_train / BATCH)
    n_eval = math.ceil(n_val / EVAL_BATCH) + math.ceil(n_test / EVAL_BATCH)
    epoch = (n_micro * micro + (n_micro // cfg.train.accumulation) * step + n_eval * ev) / 1000
    return {"micro": micro + step / cfg.train.accumulation, "micro_cpu": micro_cpu, "eval": ev, "eval_cpu": ev_cpu,
            "epoch": epoch, "opt": step}


def profile_full(family: str, device: torch.device, rows: int = 25) -> None:
    """Top operators of a few training micro-steps of the full model (self time)."""
    from torch.profiler import ProfilerActivity, profile

    cfg = variant_config(family, load_catalogue()["full"])
    dims, lens = REFERENCE_SHAPES[family]
    model = build_model(cfg, dims, lens).to(device).train()
    x, labels = random_batch(family, BATCH, device, torch.Generator().manual_seed(0))
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
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    ap.add_argument("--repeats", type=int, default=20, help="timed repetitions per measurement (median)")
    ap.add_argument("--variants", default="", help="comma-separated catalogue names (default: all features-mode)")
    ap.add_argument("--families", default="mosi,mosei", help="dataset shapes: mosi, mosei or both")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--profile", action="store_true", help="also print a torch.profiler table of the full model")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          (args.device if args.device != "auto" else "cpu"))
    catalogue = load_catalogue()
    names = [n for n in args.variants.split(",") if n] or list(catalogue)
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f", threads {torch.get_num_threads()}, repeats {args.repeats}, "
          f"micro-batch {BATCH}, eval batch {EVAL_BATCH}")
    print(f"{'family':7} {'variant':16} {'micro-step ms':>14} {'(cpu ms)':>9} {'opt step ms':>12} "
          f"{'eval-64 ms':>11} {'(cpu ms)':>9} {'epoch s':>8}")
    for family in args.families.split(","):
        for name in names:
            cfg = variant_config(family, get_variant(name, catalogue))
            if cfg.model.text_encoder != "features":
                print(f"{family:7} {name:16} skipped: text encoder {cfg.model.text_encoder} (features mode only)")
                continue
            r = bench_variant(cfg, family, args.repeats, device)
            print(f"{family:7} {name:16} {r['micro']:14.1f} {r['micro_cpu']:9.1f} {r['opt']:12.1f} "
                  f"{r['eval']:11.1f} {r['eval_cpu']:9.1f} {r['epoch']:8.2f}", flush=True)
    print("official code (2-core CPU, 2 threads): MOSI micro-step 280 ms, eval-64 156 ms, epoch ~25 s")
    if args.profile:
        profile_full(args.families.split(",")[0], device)


if __name__ == "__main__":
    try:
        main()
    except DLFError as err:
        raise SystemExit(f"error: {err}") from None
