"""Layout: the aggregate frame -> paper-style tables as plain Python structures for render.

Table 2 style (one per study x dataset with ablation rows): the reference model first, then the
paper's groups in print order, then any other groups. Table 1 style (one per study with the
reference variant): the paper's quoted rows, then our measured reference model per dataset.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dlf.report.paper import BASELINE_GROUP, LABELS, PAPER_CORPORA, PAPER_GROUPS, TABLE1_METRICS, \
    TABLE2_METRICS, PaperTables, decimals, method_key

if TYPE_CHECKING:  # the structures stay importable without pandas: render uses them
    import pandas as pd


@dataclass
class Cell:
    mean: float | None
    std: float | None = None
    n: int = 0
    decimals: int = 2
    best: bool = False
    sig: bool = False
    p: float | None = None
    p_holm: float | None = None
    ci: tuple[float, float] | None = None
    paper: float | None = None
    gap: float | None = None
    gap_std: float | None = None
    mark: str = ""  # the paper's source mark on a quoted cell


@dataclass
class Column:
    dataset: str
    metric: str
    kind: str = "value"  # 'value' | 'paper' | 'gap' (points and std units) | 'gap_points'

    @property
    def key(self) -> str:
        return f"{self.dataset}:{self.metric}"


@dataclass
class ColumnGroup:
    title: str | None  # a dataset display name (Table 1), a metric (with paper columns) or None
    columns: list[Column]


@dataclass
class Row:
    label: str
    latex: str | None  # the dlf.latex tag (LaTeX source); None: render escapes ``label``
    kind: str = "measured"  # 'measured' | 'reference' (quoted) | 'gap' / 'gap_std' (to the paper)
    variant: str | None = None
    dataset: str | None = None
    n: int = 0
    mark: str = ""
    cells: dict[str, Cell] = field(default_factory=dict)
    is_reference: bool = False  # the row the others are tested against


@dataclass
class Block:
    title: str | None
    rows: list[Row]
    kind: str = "measured"  # 'measured' | 'reference'


@dataclass
class Dataset:
    name: str
    display: str
    corpus: str
    synthetic: bool


@dataclass
class Table:
    name: str  # file stem, e.g. 'table2-synthetic-mosi'
    kind: str  # 'table1' | 'table2'
    study: str
    datasets: list[Dataset]
    groups: list[ColumnGroup]
    blocks: list[Block]
    ddof: int = 1
    alpha: float = 0.05
    reference_label: str | None = None
    show_n: bool = False
    n_values: list[int] = field(default_factory=list)
    paper_columns: bool = False

    @property
    def columns(self) -> list[Column]:
        return [c for g in self.groups for c in g.columns]

    @property
    def synthetic(self) -> bool:
        return any(d.synthetic for d in self.datasets)


def dataset_info(dataset: str, corpus: str, synthetic: bool) -> Dataset:
    """Display names never caption generated data as the real dataset."""
    corp = (corpus or "").upper()
    if synthetic:
        display = f"synthetic-{corp}" if corp else f"synthetic-{Path(dataset).stem}"
    elif dataset.lower() in PAPER_CORPORA:
        display = dataset.upper()
    else:
        display = Path(dataset).stem
    return Dataset(dataset, display, corpus or "", bool(synthetic))


def _text(x) -> str | None:
    """A tag value or None (pandas gives NaN for a missing string)."""
    return x if isinstance(x, str) and x else None


def _none(x) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def measured_cell(rec: dict, m: str) -> Cell:
    """One aggregate record's statistics for metric ``m`` as a Cell."""
    mean = _none(rec.get(f"{m}_mean"))
    lo, hi = _none(rec.get(f"{m}_ci_low")), _none(rec.get(f"{m}_ci_high"))
    return Cell(mean, _none(rec.get(f"{m}_std")), int(rec.get(f"{m}_n") or 0), decimals(m),
                bool(rec.get(f"{m}_best", False)), bool(rec.get(f"{m}_sig", False)),
                _none(rec.get(f"{m}_p")), _none(rec.get(f"{m}_p_holm")),
                (lo, hi) if lo is not None and hi is not None else None,
                _none(rec.get(f"{m}_paper")), _none(rec.get(f"{m}_gap")), _none(rec.get(f"{m}_gap_std")))


def _measured_row(rec: dict, metrics) -> Row:
    ds = rec["dataset"]
    return Row(rec["label"], _text(rec.get("latex")), "measured",
               rec["variant"], ds, int(rec["n"]), cells={f"{ds}:{m}": measured_cell(rec, m) for m in metrics},
               is_reference=bool(rec.get("is_reference", False)))


def _group_order(frame: pd.DataFrame) -> list:
    groups = [g for g in frame["group"].dropna().unique()]
    extra = sorted((g for g in groups if g not in PAPER_GROUPS),
                   key=lambda g: (frame.loc[frame["group"] == g, "order"].min(), g))
    return [g for g in PAPER_GROUPS if g in groups] + extra


def _best_in_column(rows: list[Row], key: str, metric: str) -> None:
    """Bold the best printed value among ``rows`` (only when at least two rows compete)."""
    from dlf.report.aggregate import best_flags

    cells = [r.cells[key] for r in rows if key in r.cells]
    flags = best_flags([c.mean for c in cells], metric)
    for cell, flag in zip(cells, flags):
        cell.best = flag


def table2(frame: pd.DataFrame, study: str, dataset: str, paper_columns: bool, ddof: int,
           alpha: float) -> Table:
    """The ablation table of one study x dataset (``frame``: that slice of the aggregate)."""
    frame = frame.sort_values(["order", "variant"], kind="stable")
    first = frame.iloc[0]
    info = dataset_info(dataset, first["corpus"], first["synthetic"])
    metrics = [m for m in TABLE2_METRICS if f"{m}_mean" in frame.columns]
    show_paper = paper_columns and any(f"{m}_paper" in frame.columns and frame[f"{m}_paper"].notna().any()
                                       for m in metrics)
    if show_paper:
        groups = [ColumnGroup(LABELS[m], [Column(dataset, m, k) for k in ("value", "paper", "gap")])
                  for m in metrics]
    else:
        groups = [ColumnGroup(None, [Column(dataset, m) for m in metrics])]
    records = frame.to_dict("records")
    for r in records:
        r["group"] = _text(r["group"])
    top = [r for r in records if r["is_reference"]] + \
          [r for r in records if not r["is_reference"] and r["group"] is None]
    blocks = [Block(None, [_measured_row(r, metrics) for r in top])] if top else []
    for g in _group_order(frame):
        blocks.append(Block(g, [_measured_row(r, metrics) for r in records if r["group"] == g]))
    ref = next((r for r in records if r["is_reference"]), None)
    n_values = sorted({int(r["n"]) for r in records})
    return Table(f"table2-{slug(dataset)}", "table2", study, [info], groups, blocks, ddof, alpha,
                 ref["label"] if ref else None, len(n_values) > 1, n_values, show_paper)


def table1(frame: pd.DataFrame, study: str, datasets: list[str], paper: PaperTables | None,
           paper_columns: bool, ddof: int, alpha: float, quoted: bool = False) -> Table:
    """Methods x datasets: a measured row for our reference model and every baseline we trained
    (mean +- std, paired test against the reference, gap to the paper's number), quoted rows for the
    methods we did not train (all quoted rows with ``quoted``)."""
    records = frame.to_dict("records")
    by_dataset = {r["dataset"]: r for r in records}
    infos = [dataset_info(d, by_dataset[d]["corpus"], by_dataset[d]["synthetic"]) for d in datasets]
    metrics = list(TABLE1_METRICS)  # the quoted rows have all six, whatever we measured
    groups = [ColumnGroup(_column_title(i), [Column(i.name, m) for m in metrics]) for i in infos]
    rows = _method_rows(records, datasets, metrics, paper_columns)
    trained = {method_key(r.label) for r in rows if r.kind == "measured"}
    blocks = []
    if paper is not None:
        shown = [r for r in paper.table1 if quoted or (r.source != "dlf" and method_key(r.method) not in trained)]
        if shown:
            blocks.append(Block("quoted", [_quoted_row(r, infos, metrics) for r in shown], "reference"))
    blocks.append(Block("measured", rows))
    _bold_table1(blocks, infos, metrics)
    ref = next((r for r in rows if r.is_reference), rows[0])
    n_values = sorted({int(r["n"]) for r in records})
    return Table("table1", "table1", study, infos, groups, blocks, ddof, alpha, ref.label,
                 len(n_values) > 1, n_values, any(r.kind == "gap" for r in rows))


def _method_rows(records: list[dict], datasets: list[str], metrics, paper_columns: bool) -> list[Row]:
    """One row per method (the reference first, then baselines by catalogue order), each with its
    cells on every dataset; with ``paper_columns``, a gap-to-paper row under every method that has one."""
    variants = sorted({r["variant"] for r in records},
                      key=lambda v: next((not r["is_reference"], r["order"], r["label"]) for r in records
                                         if r["variant"] == v))
    rows = []
    for v in variants:
        mine = [r for r in records if r["variant"] == v and r["dataset"] in datasets]
        first = mine[0]
        row = Row(first["label"], _text(first.get("latex")), "measured", v, None, min(int(r["n"]) for r in mine),
                  is_reference=bool(first["is_reference"]))
        for rec in mine:
            row.cells.update(_measured_row(rec, metrics).cells)
        rows.append(row)
        if paper_columns and any(c.gap is not None for c in row.cells.values()):
            rows.append(Row("gap to paper", None, "gap", v, None, row.n, cells=row.cells))
    return rows


def _column_title(info: Dataset) -> str:
    return f"CMU-{info.display}" if info.display in ("MOSI", "MOSEI") else info.display


def _quoted_row(ref, infos: list[Dataset], metrics) -> Row:
    label = "DLF (paper)" if ref.source == "dlf" else ref.method
    row = Row(label, None, "reference", mark=ref.mark)
    for info in infos:
        values = ref.values.get(info.corpus, {})
        for m in metrics:
            row.cells[f"{info.name}:{m}"] = Cell(_none(values.get(m)), decimals=decimals(m),
                                                  mark=ref.cell_mark(m))
    return row


def _bold_table1(blocks: list[Block], infos: list[Dataset], metrics) -> None:
    """Real datasets: best over quoted and measured rows together; synthetic: within each block."""
    for info in infos:
        for m in metrics:
            key = f"{info.name}:{m}"
            if info.synthetic:
                for b in blocks:
                    _best_in_column([r for r in b.rows if r.kind in ("measured", "reference")], key, m)
            else:
                _best_in_column([r for b in blocks for r in b.rows if r.kind in ("measured", "reference")],
                                key, m)


def slug(text: str) -> str:
    """A dataset spec as a file-name part: 'synthetic-mosi', or a pickle path's stem."""
    stem = Path(text).stem if ("/" in text or text.endswith(".pkl")) else text
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in stem.lower())


def build_tables(frame: pd.DataFrame, paper: PaperTables | None, paper_columns: bool = True,
                 ddof: int = 1, alpha: float = 0.05,
                 dataset_order: dict[str, list[str]] | None = None, quoted: bool = False) -> list[Table]:
    """Every table the data supports: a Table 2 per study x dataset with ablation rows, and a
    Table 1 per study with the reference model and the baselines (catalogue group 'Baselines').
    ``dataset_order``: study -> datasets as written; ``quoted``: every quoted Table 1 row."""
    tables = []
    for study, mine in frame.groupby("study", sort=False):
        order = (dataset_order or {}).get(study) or []
        datasets = sorted(mine["dataset"].unique(), key=lambda d: _dataset_rank(d, order, mine))
        baseline = mine["group"] == BASELINE_GROUP
        for d in datasets:
            part = mine[(mine["dataset"] == d) & ~baseline]
            if (~part["is_reference"]).any():
                tables.append(table2(part, study, d, paper_columns, ddof, alpha))
        methods = mine[mine["is_reference"] | baseline]
        if not methods.empty:  # with a reference, its datasets; else (baselines alone) every dataset
            ref = methods[methods["is_reference"]] if methods["is_reference"].any() else methods
            shown = [d for d in datasets if d in set(ref["dataset"])]
            tables.append(table1(methods, study, shown, paper, paper_columns, ddof, alpha, quoted))
    return tables


def _dataset_rank(dataset: str, order: list[str], frame: pd.DataFrame) -> tuple:
    """As the study lists them; else real before synthetic, MOSI before MOSEI, then by name."""
    if dataset in order:
        return (0, order.index(dataset), "")
    row = frame[frame["dataset"] == dataset].iloc[0]
    corp = PAPER_CORPORA.index(row["corpus"]) if row["corpus"] in PAPER_CORPORA else len(PAPER_CORPORA)
    return (1, int(bool(row["synthetic"])) * 10 + corp, dataset)
