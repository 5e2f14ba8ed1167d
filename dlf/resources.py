"""Where the built-in catalogue, studies and paper numbers live, and where local state goes.

In a checkout (or an editable install) they are the top-level folders ``ablations/``, ``studies/``
and ``reports/``; a wheel ships copies under ``dlf/_builtin/`` so that a non-editable install run
from any directory still finds them.
"""
from __future__ import annotations

import os
from pathlib import Path

_PKG = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """The folder of built-in resources ``name``: 'ablations', 'studies' or 'reports'."""
    checkout = _PKG.parent / name
    if checkout.is_dir() and (_PKG.parent / "pyproject.toml").is_file():
        return checkout
    return _PKG / "_builtin" / name


def paper_tables_path() -> Path:
    return resource_dir("reports") / "paper_tables.yaml"


def home_dir() -> Path:
    """Local state (tracking store, journals, locks): ``$DLF_HOME`` or ``./.dlf``."""
    return Path(os.environ.get("DLF_HOME", ".dlf")).resolve()


def cache_dir() -> Path:
    """Generated synthetic data and fingerprints: ``$DLF_CACHE`` or ``~/.cache/dlf-ablate``."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dlf-ablate"
    return Path(os.environ.get("DLF_CACHE", default)).resolve()


def data_root(explicit: str | os.PathLike | None = None) -> Path | None:
    """Root of the MMSA folder layout (``MOSI/Processed/aligned_50.pkl``): flag, then ``$DLF_DATA_ROOT``."""
    value = explicit or os.environ.get("DLF_DATA_ROOT")
    return Path(value).expanduser().resolve() if value else None
