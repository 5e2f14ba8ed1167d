"""Cost of every model family in the zoo at MOSI shapes, each under its own MOSI preset.

One row per method of Table 1: the catalogue's reference ``full`` (DLF, features text mode) and every
variant of the catalogue group "Baselines" (one per registered baseline family), in the features text
mode wherever the family has one (MISA, DMD); a family without it (MAG-BERT) runs only with ``--bert``.
``--bert FOLDER`` adds a ``<name>+bert`` row for every baseline with a fine-tuned BERT text mode (MISA,
MAG-BERT, DMD) around the BERT in FOLDER (e.g. the parity fixtures' tiny BERT; token ids drawn below
its vocabulary). Per method:

- params: registered parameters at the real MOSI widths and stored lengths (aligned_50, or
  unaligned_50 where the preset reads it: data.aligned), as ``model summary`` counts them;
- step ms: one optimizer step of the preset's recipe (train.batch_size x train.accumulation samples
  of random tensors of those shapes) through the trainer's own ``dlf.train.loop._train_epoch``:
  forward, the family's loss terms, gradients, accumulation, clipping, the Adam step over the
  family's parameter groups; the median of ``--repeats`` after one warm-up step;
- epoch s: one epoch of ``dlf.train.loop.train_run`` (training and validation, ``train_seconds``; the
  test evaluation after it is not counted) on synthetic MOSI at ``--scale`` of the real split sizes
  (1284 / 229 / 686 at 1.0), aligned or unaligned as the preset says. Below 0.125 DLF's recipe
  (10 micro-batches of 16 per step) has no complete step in an epoch, and is shown as n/a. A scale
  whose training split leaves a last micro-batch of one sample fails the BatchNorm families (TFN,
  LMF, LF-DNN) in training mode, as in MMSA: 0.12 (154 samples) suits every preset.

Benchmark one process at a time: two torch processes on the same cores slow each other down badly.

    python benchmarks/zoo.py [--threads 2] [--repeats 3] [--scale 0.12] [--methods full,mult]
                             [--device cpu] [--no-epoch] [--bert FOLDER] [--quick]

``--quick`` is a smoke run: one timed step, no epoch.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import time
import typing

import torch

from dlf.data.mmsa import load_dataset
from dlf.errors import DLFError
from dlf.models.registry import build_model, family_of
from dlf.report.paper import BASELINE_GROUP
from dlf.study.catalogue import REFERENCE_SHAPES, UNALIGNED_LENS, load_catalogue, variant_config
from dlf.train.evaluation import SplitTensors
from dlf.train.loop import Runtime, _lane_pool, _param_groups, _train_epoch, torch_settings, train_run


def methods() -> list[str]:
    """``full`` then the catalogue's baselines, in table order: whatever families are registered."""
    cat = load_catalogue()
    return ["full"] + sorted((n for n, v in cat.items() if v.group == BASELINE_GROUP), key=lambda n: cat[n].order)


def text_modes(cfg) -> tuple[str, ...]:
    """The text modes a family's model section offers (DLF-style families: features and the BERT ones)."""
    from dlf.models.registry import family_spec

    hints = typing.get_type_hints(family_spec(cfg.model.family).model)
    return typing.get_args(hints.get("text_encoder")) or ("features",)


def rows(names: list[str], cat, bert: str | None, scale: float) -> list[tuple[str, object]]:
    """(row name, config) per benchmarked method: features mode where the family has it, and with
    ``bert`` a fine-tuned BERT row for every baseline that offers the ``bert`` mode."""
    out = []
    for name in names:
        base = {"train.max_epochs": 1, "data.scale": scale}
        cfg = variant_config("mosi", cat[name], base)
        if "features" in text_modes(cfg):
            out.append((name, variant_config("mosi", cat[name], {**base, "model.text_encoder": "features"})))
        if bert and name != "full" and "bert" in text_modes(cfg):
            out.append((f"{name}+bert", variant_config("mosi", cat[name], {**base, "model.text_encoder": "bert",
                                                                          "model.pretrained": bert})))
    return out


def mosi_shapes(cfg) -> tuple[dict[str, int], dict[str, int]]:
    dims, lens = REFERENCE_SHAPES["mosi"]
    return dims, (lens if cfg.data.aligned else UNALIGNED_LENS["mosi"])


def random_split(dims, lens, n: int, device: torch.device, gen: torch.Generator, vocab: int = 0) -> SplitTensors:
    """Random inputs of these shapes; ``vocab`` > 0: the text as ``text_bert`` ids below it (B, 3, T_l)."""
    x = [torch.randn(n, lens[m], dims[m], generator=gen).to(device) for m in ("l", "a", "v")]
    if vocab:
        ids = torch.randint(0, vocab, (n, lens["l"]), generator=gen)
        x[0] = torch.stack([ids, torch.ones_like(ids), torch.zeros_like(ids)], dim=1).to(device)
    labels = (torch.randint(-15, 16, (n,), generator=gen) / 5).to(device)  # the 0.2 label grid of MOSI
    return SplitTensors(*x, labels)


def step_ms(cfg, device: torch.device, repeats: int) -> tuple[int, float]:
    """(parameters, median ms of one optimizer step of the preset's batch x accumulation)."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    dims, lens = mosi_shapes(cfg)
    model = build_model(cfg, dims, lens).to(device)
    n_params = family_of(cfg).summary(model)["total"]
    vocab = _vocab(model)
    t = cfg.train
    params = [p for p in model.parameters() if p.requires_grad]
    # the optimizer as dlf.train.loop._fit builds it: the family's groups, the preset's decay
    opt = torch.optim.Adam(_param_groups(model, cfg, params), lr=t.lr, weight_decay=t.weight_decay, foreach=True)
    window = random_split(dims, lens, t.batch_size * t.accumulation, device, gen, vocab)  # exactly one step
    runtime = Runtime(device=str(device))
    with torch_settings(device, torch.get_num_threads()), _lane_pool(model, cfg, device, runtime) as pool:
        shuffle = torch.Generator().manual_seed(0)
        wall = []
        for i in range(repeats + 1):  # the first one warms up
            _sync(device)
            start = time.perf_counter()
            _train_epoch(model, opt, params, cfg, window, shuffle, i + 1, pool, None)
            _sync(device)
            wall.append(time.perf_counter() - start)
    return n_params, 1000 * statistics.median(wall[1:])


def epoch_seconds(cfg, device: str, threads: int) -> tuple[str, int]:
    """(seconds of one training + validation epoch on synthetic MOSI at cfg.data.scale, or why it
    cannot run there; train samples)."""
    dataset = load_dataset("synthetic-mosi", cfg.data)
    n = len(dataset.splits["train"].ids)
    if cfg.model.text_encoder != "features" and cfg.model.pretrained != "bert-base-uncased":
        from transformers import BertConfig

        vocab = BertConfig.from_pretrained(cfg.model.pretrained).vocab_size
        for split in dataset.splits.values():  # the synthetic ids are bert-base's
            split.text_bert[:, 0] %= vocab
    try:
        result = train_run(cfg, dataset, Runtime(device=device, threads=threads, progress=False))
    except DLFError:  # e.g. fewer micro-batches than the recipe accumulates: no step at this scale
        return f"n/a: {cfg.train.accumulation} x {cfg.train.batch_size} > {n} samples", n
    except (RuntimeError, ValueError) as err:  # the other methods' rows still come
        return f"failed: {type(err).__name__}: {str(err).splitlines()[0][:80]}", n
    return f"{result.train_seconds:.2f}", n


def _vocab(model) -> int:
    """The vocabulary of the model's BERT (0 without one)."""
    text = getattr(model, "text_encoder", None)
    bert = getattr(text, "bert", None)
    return int(bert.config.vocab_size) if bert is not None else 0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch thread budget (default 2)")
    ap.add_argument("--repeats", type=int, default=3, help="timed optimizer steps per method (after a warm-up)")
    ap.add_argument("--scale", type=float, default=0.12, help="synthetic MOSI size for the epoch, in (0, 1] "
                    "(MulT's unaligned epoch at 1.0 takes many minutes on a CPU)")
    ap.add_argument("--methods", default=None, help="comma-separated variants (default: full + every baseline)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-epoch", action="store_true", help="skip the synthetic-MOSI epoch")
    ap.add_argument("--bert", default=None, help="BERT folder: add a fine-tuned-BERT row per baseline that has one")
    ap.add_argument("--quick", action="store_true", help="smoke run: one timed step, no epoch")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.no_epoch = 1, True
    gc.freeze()  # as the CLI does after its imports (dlf.startup): collections skip those objects
    torch.set_num_threads(args.threads)
    device, cat = torch.device(args.device), load_catalogue()
    names = args.methods.split(",") if args.methods else methods()
    print(f"torch {torch.__version__}, {args.device}, {args.threads} threads, MOSI shapes, each method's MOSI preset; "
          f"epoch: synthetic MOSI at scale {args.scale}")
    print(f"{'method':<14} {'family':<10} {'data':<9} {'batch x acc':>11} {'params':>11} {'step ms':>9} "
          f"{'epoch s':>8} {'train n':>7}")
    for name, cfg in rows(names, cat, args.bert, args.scale):
        n_params, ms = step_ms(cfg, device, args.repeats)
        epoch, n = ("-", "-") if args.no_epoch else epoch_seconds(cfg, args.device, args.threads)
        t = cfg.train
        print(f"{name:<14} {cfg.model.family:<10} {'aligned' if cfg.data.aligned else 'unaligned':<9} "
              f"{f'{t.batch_size} x {t.accumulation}':>11} {n_params:>11,} {ms:9.1f} {epoch:>8} {n:>7}", flush=True)


if __name__ == "__main__":
    main()
