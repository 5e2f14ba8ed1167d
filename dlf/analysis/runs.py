"""The finished seed runs of a study, with the checkpoint each tracked and the data it was trained on.

The runs come from the report's collector (the chosen FINISHED run of every slot); a run's checkpoint
is its ``checkpoint/model.pt`` artifact; its data is the file named in the checkpoint (or, when that
file is gone, the dataset name resolved again), refused when its sha256 is not the one trained on.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlf.errors import DLFError

__all__ = ["RunRef", "finished_runs", "Loader", "display_name"]


@dataclass(frozen=True)
class RunRef:
    """One finished seed run: where it sits in the study and what it scored on the test split."""

    study: str
    variant: str
    dataset: str
    seed: int
    run_id: str
    label: str
    order: int
    synthetic: bool
    corpus: str = ""
    test: dict[str, float] = field(default_factory=dict)  # msa_metrics keys -> tracked test values

    @property
    def title(self) -> str:
        return f"{self.variant}@{self.dataset}#{self.seed}"

    @property
    def where(self) -> str:
        """The dataset as captions name it: 'synthetic-MOSI (generated data)', 'MOSI', a file's stem."""
        return display_name(self.dataset, self.corpus, self.synthetic)


def display_name(dataset: str, corpus: str, synthetic: bool) -> str:
    from dlf.report.tables import dataset_info

    info = dataset_info(dataset, corpus, synthetic)
    return f"{info.display} (generated data)" if synthetic else info.display


def finished_runs(uri: str, study: str) -> tuple[str, list[RunRef], list[int]]:
    """(study name, its finished seed runs in report order, the study's seeds in file order); a study
    without any finished run is refused in one line."""
    from dlf.report.collect import collect, study_slots

    name, slots = study_slots(study)
    got = collect(uri, [name], {name: slots} if slots else None, predictions_for=())
    runs = got.finished
    if runs.empty:
        raise DLFError(f"study {name!r}: no finished runs in {uri}; run `dlf-ablate run {study}` first "
                       "or pass --tracking-uri")
    refs = [RunRef(r.study, r.variant, r.dataset, int(r.seed), r.run_id, str(r.label), int(r.order),
                   bool(r.synthetic), str(r.corpus or ""), {k[len("test_"):]: float(getattr(r, k)) for k in runs.columns
                                       if k.startswith("test_") and getattr(r, k) == getattr(r, k)})
            for r in runs.itertuples()]
    seeds = list(dict.fromkeys(s for _, _, s in slots)) if slots else sorted({r.seed for r in refs})
    return name, refs, seeds


class Loader:
    """Downloads checkpoints and loads each dataset once (per file and data config) for many runs."""

    def __init__(self, uri: str, device: str = "cpu", data_root: Any = None):
        from dlf.run import tracking

        self.client = tracking.client(uri)
        self.device, self.data_root = device, data_root
        self._tmp = tempfile.TemporaryDirectory(prefix="dlf-analysis-")
        self._data: dict[tuple, Any] = {}

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def checkpoint(self, run: RunRef) -> Path:
        try:
            return Path(self.client.download_artifacts(run.run_id, "checkpoint/model.pt",
                                                       str(Path(self._tmp.name) / run.run_id)))
        except Exception:  # noqa: BLE001 - a missing or unreadable artifact is the same user-facing problem
            raise DLFError(f"{run.title} (run {run.run_id}): no readable checkpoint/model.pt artifact; "
                           "run the study again after deleting that run") from None

    def model(self, run: RunRef) -> tuple[Any, Any, Any]:
        """(model in eval mode on the device, its RunConfig, the dataset it was trained on)."""
        from dlf.train.checkpoint import load_checkpoint
        from dlf.train.loop import resolve_device

        path = self.checkpoint(run)
        model, cfg, meta = load_checkpoint(path, map_location=resolve_device(self.device))
        return model, cfg, self.dataset(run, cfg, meta.get("dataset", {}))

    def dataset(self, run: RunRef, cfg: Any, meta: dict) -> Any:
        from dlf.data.mmsa import load_dataset

        stored = meta.get("path")
        spec = stored if stored and Path(stored).is_file() else meta.get("name", run.dataset)
        key = (spec, cfg.data)
        if key not in self._data:
            self._data[key] = load_dataset(spec, cfg.data, self.data_root)
        ds = self._data[key]
        want = meta.get("fingerprint")
        if want and ds.fingerprint != want:
            raise DLFError(f"{run.title}: the data file {ds.path} (sha256 {ds.fingerprint[:12]}) is not the "
                           f"one the run was trained on ({want[:12]}); restore it or pass --data-root")
        return ds
