"""``data synth`` and ``data check``: write a synthetic MMSA pickle, validate and describe a data file."""
from __future__ import annotations

from pathlib import Path

import typer

from dlf.cli.options import DataRootOpt, ForceOpt
from dlf.errors import DLFError

SYNTH_NAMES = {"synthetic-mosi": "mosi", "synthetic-mosei": "mosei", "mosi": "mosi", "mosei": "mosei"}
LABEL_CLASSES = ("-3", "-2", "-1", "0", "1", "2", "3")

ScaleOpt = typer.Option(1.0, "--scale", help="Fraction of the real split sizes, in (0, 1] (synthetic data only).")
SeedOpt = typer.Option(0, "--seed", help="Generator seed (synthetic data only); same seed, same bytes.")
UnalignedOpt = typer.Option(False, "--unaligned", help="Use unaligned_50 (per-modality lengths) instead of aligned_50.")


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Create and validate MMSA feature files (real or synthetic).", no_args_is_help=True)
    data_app.command("synth")(synth)
    data_app.command("check")(check)
    app.add_typer(data_app, name="data")


def synth(
    name: str = typer.Argument(..., help="synthetic-mosi or synthetic-mosei (MOSI or MOSEI shapes and sizes)."),
    out: Path = typer.Option(..., "--out", "-o", help="Pickle file to write (MMSA layout)."),
    scale: float = ScaleOpt,
    unaligned: bool = UnalignedOpt,
    seed: int = SeedOpt,
    force: ForceOpt = False,
) -> None:
    """Write a deterministic synthetic dataset in the MMSA pickle layout (never labelled as real data)."""
    from dlf.data.fingerprint import file_fingerprint
    from dlf.data.synthetic import split_sizes, write_synthetic

    corpus = SYNTH_NAMES.get(name.strip().lower())
    if corpus is None:
        raise DLFError(f"data synth: unknown name {name!r}; use synthetic-mosi or synthetic-mosei")
    if out.exists() and not force:
        raise DLFError(f"--out {out}: file exists; pass --force to overwrite it or choose another path")
    if not out.parent.is_dir():
        raise DLFError(f"--out {out}: folder {out.parent} does not exist; create it first")
    path = write_synthetic(corpus, out, aligned=not unaligned, scale=scale, seed=seed)
    sizes = "/".join(map(str, split_sizes(corpus, scale)))
    kind = "unaligned" if unaligned else "aligned"
    typer.echo(f"wrote {path} (synthetic-{corpus.upper()}, {kind}, train/valid/test {sizes}, seed {seed})")
    typer.echo(f"sha256 {file_fingerprint(path)}")


def check(
    dataset: str = typer.Argument(..., help="A pickle path, or mosi, mosei, synthetic-mosi, synthetic-mosei."),
    data_root: DataRootOpt = None,
    unaligned: bool = UnalignedOpt,
    scale: float = ScaleOpt,
    seed: int = SeedOpt,
) -> None:
    """Validate a data file and print its splits, shapes, dtypes, 7-class label histogram and sha256."""
    from dlf.config import DataConfig
    from dlf.data.mmsa import load_dataset

    ds = load_dataset(dataset, DataConfig(aligned=not unaligned, scale=scale, synth_seed=seed), data_root)
    _print_report(ds)


def _print_report(ds) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from dlf.data.mmsa import label_histogram

    console = Console()
    kind = "aligned" if ds.aligned else "unaligned"
    console.print(f"[bold]{ds.display_name}[/bold] ({kind}) {escape(str(ds.path))}", soft_wrap=True)
    layout = Table(title="Stored arrays: dtype and shape per split")
    layout.add_column("key")
    layout.add_column("dtype")
    for split in ds.splits:
        layout.add_column(f"{split} ({len(ds.splits[split])})")
    for key in ds.layout["train"]:
        entries = [ds.layout[s].get(key) for s in ds.splits]
        dtypes = "/".join(dict.fromkeys(e[1] for e in entries if e))
        layout.add_row(key, dtypes, *(str(tuple(e[0])) if e else "-" for e in entries))
    console.print(layout)
    hist = Table(title="Labels, 7 classes (clip [-3, 3], round)")
    hist.add_column("split")
    for name in LABEL_CLASSES:
        hist.add_column(name, justify="right")
    for split, sp in ds.splits.items():
        hist.add_row(split, *map(str, label_histogram(sp.labels.numpy())))
    console.print(hist)
    dims = ", ".join(f"{m} {ds.dims[m]}x{ds.seq_lens[m]}" for m in ("l", "a", "v"))
    console.print(f"widths x steps: {dims}")
    console.print(f"sha256 {ds.fingerprint}", soft_wrap=True)
    console.print("[green]valid[/green]")
