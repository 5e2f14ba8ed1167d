"""One training run under the official DLF protocol, as a library call (no MLflow, no rich).

Protocol (defaults in ``dlf.config.TrainConfig``, read from the official trainer): Adam (lr 1e-4, no
weight decay) over all trainable parameters; micro-batches of 16 drawn from a per-epoch random
permutation; gradients accumulated over 10 micro-batches (losses summed, gradients zeroed at the
first of each group, one optimizer step after the 10th); element-wise value clipping at 0.6 after
EVERY micro-batch backward, i.e. on the running accumulated gradient; ReduceLROnPlateau (min,
factor 0.5, patience 5) stepped once per epoch on the validation loss; early stopping after
``patience`` epochs without an improvement of at least ``min_delta``; the selected weights are those
of the best validation epoch and the test split is evaluated once, on them. Selection, early stopping
and the scheduler all read the validation loss rounded to ``train.val_decimals`` decimals (the
official trainers' 4 in the presets; 0 keeps it exact).

Deliberate differences from the official code, both about measurement, not about training:
- The validation loss is the sample-weighted mean |pred - label| over the unshuffled split (= MAE).
  The official value is a mean of batch means over a shuffled loader, which over-weights the last,
  smaller batch and changes with the shuffle.
- The test split is never evaluated per epoch (the official trainer logs it every epoch).

Speed without changing the arithmetic: on the CPU the micro-batches of one accumulation window are
computed concurrently (they share the weights) on lanes, threads of this process (``dlf.train.lanes``),
then accumulated and clipped in order; evaluation batches likewise. Each micro-batch draws its
dropout masks from its own generator (seed, epoch, index), so a run's numbers do not depend on the
number of lanes.

Kept as official: the < ``accumulation`` micro-batches left at the end of an epoch never reach an
optimizer step (the official end-of-epoch step can never fire; the next epoch zeroes their
gradients). They are run forward for the logged training losses; the gradients the official code
computes for them and then discards are not computed. An epoch with fewer micro-batches than
``accumulation`` would never step, so that configuration is refused.
"""
from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch

from dlf.models._kernels import dropout_rng
from dlf.config import RunConfig
from dlf.errors import DLFError
from dlf.train.evaluation import SplitTensors, evaluate, predict
from dlf.train.lanes import LanePool, batch_generator, plan_lanes

# on_epoch(epoch, metrics) after each epoch's validation; it may raise to stop the run.
EpochSink = Callable[[int, dict[str, float]], None]
# progress(kind, done, total, info): kind 'step' after each micro-batch (done/total micro-batches of
# the epoch, info {}), kind 'epoch' after each epoch (done = epoch, total = train.max_epochs, info =
# the epoch's metrics). Front-ends render it; the core never prints.
ProgressFn = Callable[[str, int, int, Mapping[str, float]], None]

__all__ = ["Runtime", "TrainResult", "train_run", "resolve_device", "predict", "evaluate", "SplitTensors"]


@dataclass(frozen=True)
class Runtime:
    """Runtime-only settings: they never change a result's identity (not part of a run key)."""

    device: str = "auto"  # 'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1', ...
    threads: int | None = None  # torch intra-op threads for this run; None keeps the current setting
    progress: bool = True  # whether a front-end should render progress (the core only calls callbacks)
    lanes: int | None = None  # CPU micro-batches computed at once (dlf.train.lanes); None = automatic. Same results.


@dataclass
class TrainResult:
    config: RunConfig
    best_epoch: int
    epochs: int
    val: dict[str, float]  # msa_metrics of the selected epoch on the validation split
    test: dict[str, float]  # msa_metrics of the selected weights on the test split (evaluated once)
    history: list[dict[str, float]]  # one dict per epoch, names as in docs/contracts.md
    test_predictions: dict[str, Any]  # {"id": list[str], "label": ndarray, "pred": ndarray}
    state_dict: dict[str, torch.Tensor]  # selected weights, on the CPU
    train_seconds: float  # the epoch loop (training and validation)
    stopped_early: bool
    device: str = field(default="cpu")
    run_seconds: float = 0.0  # the whole run's compute: model, data on the device, epochs, test evaluation


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; an unavailable or unknown device is a DLFError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DLFError(f"--device {name!r}: unknown device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DLFError(f"--device {name!r}: CUDA is not available on this machine; use --device cpu or auto")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


@contextlib.contextmanager
def torch_settings(device: torch.device, threads: int | None) -> Iterator[None]:
    """Thread count and determinism for one run; the previous global settings are restored after."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    old_fill = torch.utils.deterministic.fill_uninitialized_memory
    old_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        if threads:
            torch.set_num_threads(threads)
        if device.type == "cpu":
            # Every op used here has a deterministic CPU kernel, so this only guards what may come; on
            # CUDA it would demand CUBLAS_WORKSPACE_CONFIG and slow scatter ops: there only cuDNN is pinned.
            torch.use_deterministic_algorithms(True, warn_only=True)
            # Not the debugging aid that comes with it, which fills every torch.empty with NaN: the
            # kernels write all they allocate (with the fills, a read of unwritten memory would have
            # turned the losses NaN), and the fills cost ~8% of a MOSI training micro-step
            # (benchmarks/RESULTS.md, 2026-12-05).
            torch.utils.deterministic.fill_uninitialized_memory = False
        else:
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)
        torch.utils.deterministic.fill_uninitialized_memory = old_fill
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old_cudnn


def train_run(cfg: RunConfig, dataset: Any, runtime: Runtime = Runtime(), on_epoch: EpochSink | None = None,
              progress: ProgressFn | None = None) -> TrainResult:
    """Train one model on ``dataset`` (an ``MSADataset``) under ``cfg`` and evaluate the selected epoch."""
    from dlf.models.registry import build_model

    device = resolve_device(runtime.device)
    run_start = time.perf_counter()
    with torch_settings(device, runtime.threads):
        seed_everything(cfg.seed)
        model = build_model(cfg, dataset.dims, dataset.seq_lens).to(device)
        splits = {name: SplitTensors.from_split(dataset.splits[name], cfg.model.text_encoder, device)
                  for name in ("train", "valid", "test")}
        _check_steps(model, cfg, splits["train"].n, getattr(dataset, "display_name", "the dataset"))
        with _lane_pool(model, cfg, device, runtime) as pool:
            start = time.perf_counter()
            history, best_epoch, best_state, stopped = _fit(model, cfg, splits, pool, on_epoch, progress)
            train_seconds = time.perf_counter() - start
            model.load_state_dict(best_state)
            test_pred, test_metrics = evaluate(model, splits["test"], cfg.train.eval_batch_size, pool=pool)
    best = history[best_epoch - 1]
    return TrainResult(
        config=cfg, best_epoch=best_epoch, epochs=len(history),
        val={k[4:]: v for k, v in best.items() if k.startswith("val_") and k != "val_loss"},
        test=test_metrics, history=history,
        test_predictions={"id": list(dataset.splits["test"].ids), "label": splits["test"].labels_numpy(),
                          "pred": test_pred},
        state_dict={k: v.detach().cpu().clone() for k, v in best_state.items()},
        train_seconds=train_seconds, stopped_early=stopped, device=str(device),
        run_seconds=time.perf_counter() - run_start)


def _lane_pool(model: torch.nn.Module, cfg: RunConfig, device: torch.device, runtime: Runtime) -> LanePool:
    """Lanes for concurrent batches (dlf.train.lanes). The calling thread keeps the whole thread budget
    when training cannot overlap micro-batches (no accumulation: a window of one runs inline on it),
    and a lane's share otherwise."""
    text = getattr(model, "text_encoder", None)
    global_rng = text is not None and not getattr(text, "frozen", True)  # BERT's own dropout
    lanes, each = plan_lanes(device, torch.get_num_threads(), runtime.lanes, global_rng)
    if lanes > 1 and cfg.train.accumulation > 1:
        torch.set_num_threads(each)  # restored by torch_settings
    return LanePool(lanes, each)


def _check_steps(model: torch.nn.Module, cfg: RunConfig, n_train: int, name: str) -> None:
    bs = cfg.train.batch_size
    micro = math.ceil(n_train / bs)
    if micro < cfg.train.accumulation:
        raise DLFError(
            f"train.accumulation={cfg.train.accumulation}: {name} has only {micro} training micro-batches of "
            f"{bs} per epoch, so no optimizer step would ever run; "
            f"set train.accumulation to at most {micro} (e.g. --set train.accumulation=1)")
    batchnorm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if batchnorm and n_train % bs == 1:  # the reference keeps the last partial batch, and crashes on it
        fit = next(b for b in range(bs + 1, n_train + 2) if n_train % b != 1)
        raise DLFError(
            f"train.batch_size={bs}: the {n_train} training samples of {name} leave a last batch of one sample, "
            f"which the model's BatchNorm cannot normalise in training; use e.g. --set train.batch_size={fit}")


def _fit(model: torch.nn.Module, cfg: RunConfig, splits: Mapping[str, SplitTensors], pool: LanePool,
         on_epoch: EpochSink | None, progress: ProgressFn | None):
    """The epoch loop: train, validate, schedule, select, stop. Returns history and the best weights."""
    t = cfg.train
    params = [p for p in model.parameters() if p.requires_grad]
    # foreach: the same element-wise arithmetic as the per-parameter loop (bit-identical, checked), in
    # ~10 calls instead of ~2,000 small ones: 12.5 -> 9.3 ms per step on the CPU, where the window waits for it
    groups = _param_groups(model, cfg, params)
    optimizer = torch.optim.Adam(groups, lr=t.lr, weight_decay=t.weight_decay, foreach=True)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=t.plateau_factor, patience=t.plateau_patience) if t.scheduler == "plateau" else None
    shuffle = torch.Generator().manual_seed(cfg.seed)  # CPU generator: same order on every device
    history: list[dict[str, float]] = []
    best_loss, best_epoch, best_state = math.inf, 0, None
    for epoch in range(1, t.max_epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        metrics = _train_epoch(model, optimizer, params, cfg, splits["train"], shuffle, epoch, pool, progress)
        val_pred, val_metrics = evaluate(model, splits["valid"], t.eval_batch_size, epoch=epoch, pool=pool)
        metrics["val_loss"] = _val_loss(val_pred, splits["valid"], val_metrics, t)
        metrics.update({f"val_{k}": v for k, v in val_metrics.items()})
        metrics["lr"] = lr
        history.append(metrics)
        if metrics["val_loss"] < best_loss - t.min_delta:
            best_loss, best_epoch = metrics["val_loss"], epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if on_epoch is not None:
            on_epoch(epoch, dict(metrics))
        if progress is not None:
            progress("epoch", epoch, t.max_epochs, metrics)
        if scheduler is not None:
            scheduler.step(metrics["val_loss"])
        if epoch - best_epoch >= t.patience:
            return history, best_epoch, best_state, True
    return history, best_epoch, best_state, False


def _param_groups(model: torch.nn.Module, cfg: RunConfig, params: list) -> list[dict]:
    """The optimizer's parameter groups: the family's own (a reference's lr groups, parameters it never
    optimises), else every trainable parameter at ``train.lr``."""
    from dlf.models.registry import family_of

    hook = family_of(cfg).param_groups
    return hook(model, cfg) if hook is not None else [{"params": params}]


def _val_loss(pred: Any, data: SplitTensors, metrics: Mapping[str, float], t: Any) -> float:
    """The sample-weighted validation loss that selection, early stopping and the scheduler read:
    MAE (the official DLF trainer's L1) or MSE (MISA's criterion), rounded as configured."""
    if t.val_loss == "mae":
        value = metrics["mae"]
    else:
        value = float(np.mean((np.asarray(pred, dtype=np.float64) - data.labels_numpy()) ** 2))
    return round(value, t.val_decimals) if t.val_decimals > 0 else value


def _train_epoch(model, optimizer, params, cfg: RunConfig, data: SplitTensors, shuffle: torch.Generator,
                 epoch: int, pool: LanePool, progress: ProgressFn | None) -> dict[str, float]:
    """One pass over the training split; returns sample-weighted mean loss terms as train_<term>.

    Micro-batches are taken one accumulation window at a time: those of a window share the weights,
    so ``pool`` may compute their gradients concurrently; they are added to ``.grad`` and clipped in
    order, exactly as a sequential ``backward`` + ``clip_grad_value_`` per micro-batch would.
    """
    t = cfg.train
    model.train()
    batches = torch.randperm(data.n, generator=shuffle).split(t.batch_size)  # on the CPU: items carry lists
    stepped = len(batches) - len(batches) % t.accumulation  # micro-batches of complete windows
    names: list[str] | None = None
    sums: torch.Tensor | None = None  # running sums on the device: no host sync per micro-batch
    for first in range(0, len(batches), t.accumulation):
        optimizer.zero_grad(set_to_none=True)
        window = range(first, min(first + t.accumulation, len(batches)))
        items = [(epoch, i, batches[i].tolist(), i < stepped) for i in window]
        for i, (grads, terms) in zip(window, pool.map(_micro_batch, items, model, cfg, data)):
            if grads is not None:
                _accumulate(params, grads)
                if t.clip_value > 0:
                    torch.nn.utils.clip_grad_value_(params, t.clip_value)
            names = names or list(terms)
            values = torch.stack([terms[k].float() for k in names]) * len(batches[i])
            sums = values if sums is None else sums + values
            if progress is not None:
                progress("step", i + 1, len(batches), {})
        if len(window) == t.accumulation:
            optimizer.step()
    means = dict(zip(names, (sums / data.n).tolist()))
    if not math.isfinite(means["total"]):
        raise DLFError(f"epoch {epoch}: the training loss became {means['total']} (not finite); "
                       f"lower train.lr or check the input features for NaN/inf values")
    out = {"train_loss": means.pop("total")}
    out.update({f"train_{k}": v for k, v in means.items()})
    return out


def _micro_batch(model: torch.nn.Module, cfg: RunConfig, data: SplitTensors,
                 item: tuple[int, int, list[int], bool]) -> tuple[tuple | None, dict[str, torch.Tensor]]:
    """A pool task: loss terms of micro-batch ``i`` of ``epoch`` (sample indices ``idx``) and, when
    ``with_grad``, its gradients (a trailing window's are never used, so not computed)."""
    from dlf.models.registry import family_of

    epoch, i, idx, with_grad = item
    inputs, labels = data.take(torch.tensor(idx, device=data.device))
    rng = batch_generator(cfg.seed, epoch, i) if data.device.type == "cpu" else None
    with dropout_rng(rng), torch.set_grad_enabled(with_grad):
        terms = family_of(cfg).loss_terms(model(*inputs), labels, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(terms["total"], params, allow_unused=True) if with_grad else None
    return grads, {k: v.detach() for k, v in terms.items()}


def _accumulate(params: list[torch.Tensor], grads: tuple) -> None:
    """``p.grad += g`` as autograd's AccumulateGrad does it (None stays None: Adam then skips ``p``).
    The additions go through one foreach call: the same element-wise sums, without ~400 Python-level ops."""
    into, added = [], []
    for p, g in zip(params, grads):
        if g is None:
            continue
        if p.grad is None:
            p.grad = g if g.is_contiguous() else g.contiguous()
        else:
            into.append(p.grad)
            added.append(g)
    if into:
        torch._foreach_add_(into, added)
