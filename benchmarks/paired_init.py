"""What paired initialisation buys: the spread of the paired difference full - wo_lm over seeds.

    python benchmarks/paired_init.py                        # 5 seeds, synthetic-MOSI at scale 0.2, 4 epochs
    python benchmarks/paired_init.py --seeds 8 --epochs 6 --full-model

For each seed, ``full`` and ``wo_lm`` (no triplet projections: every other module is shared) are
trained with ``train.paired_init`` off (construction order: the modules built after the missing
projections start from other values) and on (every shared module starts from the same values). The
script prints each run's test MAE, the paired differences full - wo_lm and their mean and standard
deviation (ddof 1) for both settings. The smaller that std, the fewer seeds a paired test needs to
see an effect of the same size. Synthetic data only; nothing is written.
"""
from __future__ import annotations

import argparse
import statistics
import time

SMALL_MODEL = {"model.d_model": 20, "model.n_heads": 2, "model.n_levels": 1, "model.mem_levels": 1,
               "loss.ortho_chunk": 10}


def overrides(args: argparse.Namespace) -> dict:
    return {"data.scale": args.scale, "train.max_epochs": args.epochs, "train.patience": args.epochs,
            "train.accumulation": 1, "train.lr": args.lr, **({} if args.full_model else SMALL_MODEL)}


def test_mae(variant: str, seed: int, paired: bool, data, args: argparse.Namespace) -> float:
    from dlf.config import apply_overrides
    from dlf.study.catalogue import get_variant, variant_config
    from dlf.train.loop import Runtime, train_run

    cfg = variant_config("mosi", get_variant(variant), overrides(args))
    cfg = apply_overrides(cfg, {"seed": seed, "train.paired_init": paired}, source="benchmark")
    return train_run(cfg, data, Runtime(device="cpu", threads=args.threads, progress=False)).test["mae"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 1111, 1112, ...")
    parser.add_argument("--scale", type=float, default=0.2, help="synthetic-MOSI split sizes (0.2: 257/46/137)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--full-model", action="store_true", help="the official widths and depths (slower)")
    args = parser.parse_args()

    from dlf.config import DataConfig
    from dlf.data.mmsa import load_dataset

    data = load_dataset("synthetic-mosi", DataConfig(scale=args.scale))
    print(f"synthetic-MOSI scale {args.scale}, {args.epochs} epochs, lr {args.lr}, "
          f"{'official' if args.full_model else 'small'} model, {args.threads} thread(s)")
    start = time.perf_counter()
    for paired in (False, True):
        diffs = []
        for seed in range(1111, 1111 + args.seeds):
            full, wo_lm = (test_mae(v, seed, paired, data, args) for v in ("full", "wo_lm"))
            diffs.append(full - wo_lm)
            print(f"  paired_init={str(paired).lower():5} seed {seed}: MAE full {full:.4f}  wo_lm {wo_lm:.4f}  "
                  f"diff {full - wo_lm:+.4f}", flush=True)
        print(f"paired_init={str(paired).lower():5}: full - wo_lm mean {statistics.mean(diffs):+.4f}, "
              f"std {statistics.stdev(diffs):.4f} over {len(diffs)} seeds", flush=True)
    print(f"wall {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
