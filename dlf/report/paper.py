"""The DLF paper's published numbers (``reports/paper_tables.yaml``) and the metric conventions.

Reports quote these as reference rows (Table 1) and compare real MOSI/MOSEI runs against them
(reproduction gap). Plain Python: used by aggregate (gaps) and the table layout (reference rows).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from dlf.errors import DLFError

# Every metric a seed run logs as test_<metric> (dlf.metrics.msa_metrics keys).
METRICS = ("acc7", "acc5", "acc2", "f1", "acc2_has0", "f1_has0", "corr", "mae")
# Logged as fractions in [0, 1]; the paper prints them as percentages.
PERCENT_METRICS = frozenset({"acc7", "acc5", "acc2", "f1", "acc2_has0", "f1_has0"})
DIRECTIONS = {m: ("min" if m == "mae" else "max") for m in METRICS}
LABELS = {"acc7": "Acc-7", "acc5": "Acc-5", "acc2": "Acc-2", "f1": "F1", "acc2_has0": "Acc-2 (has0)",
          "f1_has0": "F1 (has0)", "corr": "Corr", "mae": "MAE"}
TABLE1_METRICS = ("acc7", "acc5", "acc2", "f1", "corr", "mae")
TABLE2_METRICS = ("acc7", "acc2", "f1", "mae")
# The paper's groups of Table 2, in print order; other groups follow them.
PAPER_GROUPS = ("Different Modalities", "Different Regularization", "Different Components")
PAPER_CORPORA = ("mosi", "mosei")
FULL_VARIANT = "full"
BASELINE_GROUP = "Baselines"  # catalogue group of the methods Table 1 compares DLF with


def method_key(name: str) -> str:
    """A method's name for matching our rows with the paper's ('MulT' = 'MuLT', 'Graph-MFN' = 'graphmfn')."""
    return "".join(ch for ch in str(name).lower() if ch.isalnum())

# The paper's source marks on Table 1 baseline rows (see its caption) and what each means.
SOURCE_MARKS = {"misa_paper": "*", "thuiar": "\u2020", "reproduced": "**", "original": "", "dlf": ""}
SOURCE_NOTES = {
    "*": "result from Hazarika, Zimmermann, and Poria (2020)",
    "\u2020": "result from THUIAR's GitHub page (MMSA)",
    "**": "reproduced from public code with the original hyper-parameters",
}


def decimals(metric: str) -> int:
    """Digits the paper prints: two for percentages, three for Corr and MAE."""
    return 2 if metric in PERCENT_METRICS else 3


@dataclass(frozen=True)
class ReferenceRow:
    """One quoted row of the paper's Table 1 (values per corpus, None = not reported)."""

    method: str
    source: str
    acc5_source: str | None
    values: dict[str, dict[str, float | None]]  # corpus -> metric -> value

    @property
    def mark(self) -> str:
        return SOURCE_MARKS.get(self.source, "")

    def cell_mark(self, metric: str) -> str:
        """The per-cell mark (the paper's Acc-5 cells quoted from THUIAR carry a dagger)."""
        if metric == "acc5" and self.acc5_source and self.acc5_source != self.source:
            return SOURCE_MARKS.get(self.acc5_source, "")
        return ""


@dataclass(frozen=True)
class PaperTables:
    table1: tuple[ReferenceRow, ...]
    table2: dict[str, dict[str, Any]]  # variant -> row (group, label, metric values), MOSI only
    table2_corpus: str

    def value(self, variant: str, corpus: str, metric: str, label: str | None = None) -> float | None:
        """The paper's number for one of our measured cells, or None if it has none.

        The full model's numbers come from Table 1 (both datasets), as do a baseline's (matched by its
        catalogue label, e.g. 'TFN'); ablations from Table 2 (MOSI).
        """
        for row in self.table1:
            if (variant == FULL_VARIANT and row.source == "dlf") or (
                    label is not None and row.source != "dlf" and method_key(row.method) == method_key(label)):
                return row.values.get(corpus, {}).get(metric)
        if corpus == self.table2_corpus and variant in self.table2:
            return self.table2[variant].get(metric)
        return None

    def order(self, variant: str) -> int | None:
        """Row position of ``variant`` in the paper's Table 2, if it is there."""
        names = list(self.table2)
        return names.index(variant) if variant in names else None


def load_paper_tables(path: str | Path | None = None) -> PaperTables:
    """Parse the published numbers; a broken file is a one-line DLFError naming it."""
    from dlf.resources import paper_tables_path

    path = Path(path) if path else paper_tables_path()
    return _load(str(path))


@lru_cache(maxsize=4)
def _load(path: str) -> PaperTables:
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text())
        rows = tuple(
            ReferenceRow(r["method"], r["source"], r.get("acc5_source"),
                         {corp: dict(r.get(corp) or {}) for corp in PAPER_CORPORA})
            for r in raw["table1"])
        t2 = raw["table2"]
        table2 = {r["variant"]: dict(r) for r in t2["rows"]}
        return PaperTables(rows, table2, t2["dataset"])
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise DLFError(f"{path}: cannot read the paper's tables ({err}); restore it from the "
                       "repository (reports/paper_tables.yaml)") from None
