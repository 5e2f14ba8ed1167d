"""Options shared by several commands, declared once so that flags and help stay the same everywhere.

Each is an ``Annotated`` alias: a command writes ``data_root: DataRootOpt = None`` and sets its own
default where commands differ (``--device`` is ``auto`` for ``train``/``tune``, ``cpu`` for ``evaluate``).
Options whose meaning, default or validation differ per command (``--threads``, ``--workers``,
``--ray`` and ``--gpus-per-run`` of ``run``) stay with their command.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

_SET_HELP = ("Override a config dot-path, e.g. --set train.max_epochs=5 (value read as YAML; repeatable). "
             "Applied after a study's own overrides, before the variant's.")


def _set_option(*short: str):
    return typer.Option("--set", *short, help=_SET_HELP)


DataRootOpt = Annotated[Optional[Path], typer.Option(
    "--data-root", help="Root of the MMSA folders, holding MOSI/Processed/aligned_50.pkl and MOSEI/... "
    "(default: $DLF_DATA_ROOT).")]
TrackingUriOpt = Annotated[Optional[str], typer.Option(
    "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<DLF_HOME>/mlflow.db).")]
SetOpt = Annotated[Optional[list[str]], _set_option()]
SetShortOpt = Annotated[Optional[list[str]], _set_option("-s")]  # train and model summary also take -s
SetFileOpt = Annotated[Optional[Path], typer.Option(
    "--set-file", help="YAML file of dot-path overrides for every run (e.g. the winner exported by "
    "'dlf-ablate tune'); applied before --set.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when available), cpu, cuda or cuda:N.")]
DevicesOpt = Annotated[Optional[str], typer.Option(
    "--devices", help="GPU ids, e.g. 0,1: one per worker process in turn (CUDA_VISIBLE_DEVICES); 'cpu' forces the CPU.")]
DatasetOpt = Annotated[str, typer.Option(
    "--dataset", "-d", help="mosi, mosei, synthetic-mosi, synthetic-mosei or a pickle path.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")]
