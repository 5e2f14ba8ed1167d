"""``train``, ``model summary`` and ``ablations``: one run, the model's size, the variant catalogue."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

METRIC_ROWS = [("acc7", "Acc-7", True), ("acc5", "Acc-5", True), ("acc2", "Acc-2 (non0)", True),
               ("f1", "F1 (non0)", True), ("acc2_has0", "Acc-2 (has0)", True), ("f1_has0", "F1 (has0)", True),
               ("corr", "Corr", False), ("mae", "MAE", False)]

DatasetOpt = typer.Option(..., "--dataset", "-d", help="mosi, mosei, synthetic-mosi, synthetic-mosei or a pickle path.")
VariantOpt = typer.Option(None, "--variant", "-v",
                          help="Catalogue variant (see `dlf-ablate ablations`); default: full.")
SetOpt = typer.Option(None, "--set", "-s", help="Override key=value (dot-path; value read as YAML), repeatable.")
DataRootOpt = typer.Option(None, "--data-root", help="Root of the MMSA folders (default: $DLF_DATA_ROOT).")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object on stdout instead of tables.")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    model_app = typer.Typer(help="Inspect a model of any family (parameters per component).", no_args_is_help=True)
    model_app.command("summary")(summary)
    app.add_typer(model_app, name="model")
    app.command("ablations")(ablations)


def train(
    dataset: str = DatasetOpt,
    variant: Optional[str] = VariantOpt,
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (default: the config's, 1111)."),
    set_: Optional[list[str]] = SetOpt,
    data_root: Optional[Path] = DataRootOpt,
    device: str = typer.Option("auto", "--device", help="auto (CUDA when available), cpu, cuda or cuda:N."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch CPU threads for this run."),
    save: Optional[Path] = typer.Option(None, "--save", help="Write the selected weights to this checkpoint file."),
    as_json: bool = JsonOpt,
) -> None:
    """Train one run (official protocol) and print validation and test metrics of the selected epoch."""
    from dlf.study.catalogue import prepare_run
    from dlf.startup import settle_gc
    from dlf.train.loop import Runtime, resolve_device, train_run

    settle_gc()  # the trainer is imported: collect normally from here on (dlf.startup)
    sets = _sets(set_) | ({"seed": seed} if seed is not None else {})
    resolve_device(device)  # fail before loading any data
    cfg, data, var = prepare_run(dataset, variant, sets, data_root)
    with _Progress(cfg.train.max_epochs) as progress:
        result = train_run(cfg, data, Runtime(device=device, threads=threads), progress=progress)
    if save is not None:
        _save(save, result, data, var.name)
    if as_json:
        typer.echo(json.dumps({"val": result.val, "test": result.test, "best_epoch": result.best_epoch,
                               "epochs": result.epochs}))
        return
    _print_result(result, data.display_name, var.name, save)


def summary(
    dataset: str = typer.Option("synthetic-mosi", "--dataset", "-d", help="Dataset whose shapes to use."),
    variant: Optional[str] = VariantOpt,
    set_: Optional[list[str]] = SetOpt,
    data_root: Optional[Path] = DataRootOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Parameters per component of a variant at a dataset's shapes (`total` includes the text encoder,
    0 in features mode; the BERT modes load model.pretrained)."""
    from dlf.study.catalogue import model_summary

    info = model_summary(dataset, variant, _sets(set_), data_root)
    if as_json:
        typer.echo(json.dumps(info))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"DLF parameters: {variant or 'full'} at {dataset} shapes"))
    table.add_column("component")
    table.add_column("parameters", justify="right")
    for name, n in info["components"].items():
        table.add_row(name, f"{n:,}")
    table.add_row("text encoder", f"{info['text_encoder']:,}")
    table.add_section()
    table.add_row("total", f"{info['total']:,}", style="bold")
    Console().print(table)


def ablations(as_json: bool = JsonOpt) -> None:
    """List the ablation catalogue: built-ins, ./ablations and $DLF_ABLATIONS, with parameter counts."""
    from dlf.study.catalogue import load_catalogue, parameter_count

    rows = [v.to_dict() | {"parameters": parameter_count(v, "mosi")} for v in load_catalogue().values()]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Ablation catalogue", caption="parameters: MOSI shapes, outside the text encoder")
    for col in ("name", "group", "label", "overrides", "parameters"):
        table.add_column(col, justify="right" if col == "parameters" else "left",
                         no_wrap=col in ("name", "parameters"), overflow="fold")
    for r in rows:
        overrides = "\n".join(f"{k}={_fmt(v)}" for k, v in r["overrides"].items()) or "-"
        cells = (r["name"], r["group"] or "-", r["label"], overrides, f"{r['parameters']:,}")
        table.add_row(*map(escape, cells))  # '[a]' is data, not rich markup
    Console().print(table)


def _sets(items: Optional[list[str]]) -> dict[str, Any]:
    from dlf.config import parse_set_options

    return parse_set_options(items or [], source="--set")


def _fmt(value: Any) -> str:
    return "[" + ",".join(map(str, value)) + "]" if isinstance(value, (list, tuple)) else str(value)


class _Progress:
    """Trainer progress on stderr (stdout stays clean for --json): a rich bar on a terminal, else
    one plain line per epoch (log files, CI)."""

    def __init__(self, max_epochs: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.live = self.console.is_terminal
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                 console=self.console, transient=True, disable=not self.live)
        self.epochs = self.progress.add_task("epochs", total=max_epochs, info="")
        self.steps = self.progress.add_task("  steps", total=None, info="")
        self.best = float("inf")

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def __call__(self, kind: str, done: int, total: int, info: dict) -> None:
        if kind == "step":
            self.progress.update(self.steps, completed=done, total=total)
            return
        self.best = min(self.best, info["val_mae"])
        line = f"val MAE {info['val_mae']:.4f} (best {self.best:.4f})"
        self.progress.update(self.epochs, completed=done, info=line)
        if not self.live:
            self.console.print(f"epoch {done}/{total}: train loss {info['train_loss']:.4f}, {line}",
                               highlight=False, soft_wrap=True)


def _save(path: Path, result: Any, data: Any, variant: str) -> None:
    from dlf.train.checkpoint import dataset_meta, save_checkpoint

    meta = dataset_meta(data)
    extra = {"variant": variant, "val": result.val, "test": result.test, "best_epoch": result.best_epoch,
             "epochs": result.epochs}
    save_checkpoint(path, result.state_dict, result.config, data.dims, data.seq_lens, meta, extra=extra)


def _print_result(result: Any, dataset: str, variant: str, save: Optional[Path]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    stop = "early stop" if result.stopped_early else "epoch cap"
    table = Table(title=escape(f"{variant} on {dataset}"))
    for col in ("metric", "validation", "test"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for key, label, percent in METRIC_ROWS:
        cells = [f"{100 * s[key]:.2f}" if percent else f"{s[key]:.4f}" for s in (result.val, result.test)]
        table.add_row(label, *cells)
    console = Console()
    console.print(table)
    console.print(f"epoch {result.best_epoch} selected of {result.epochs} ({stop}); "
                  f"{result.train_seconds:.1f} s on {result.device}", highlight=False)
    if save is not None:
        console.print(f"checkpoint written to {save}")
