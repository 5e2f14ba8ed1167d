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
    """The folder of built-in resources ``name``: 'ablations', 'studies', 'spaces' or 'reports'."""
    checkout = _PKG.parent / name
    if checkout.is_dir() and (_PKG.parent / "pyproject.toml").is_file():
        return checkout
    return _PKG / "_builtin" / name


def read_yaml(path: str | os.PathLike, what: str):
    """The parsed YAML of ``path``; an unreadable file or a syntax error is a one-line DLFError that
    names the file, the line and column, and ``what`` it is (e.g. 'study file', 'variant file')."""
    import yaml

    from dlf.errors import DLFError

    try:
        return yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise DLFError(f"{path}: cannot read the {what}: {err.strerror}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise DLFError(f"{path}: YAML syntax error{where}: {problem}; fix the {what}'s syntax") from None
    except ValueError as err:  # not UTF-8 text, or an integer past Python's 4300-digit limit
        raise DLFError(f"{path}: cannot read the {what}: {str(err).splitlines()[0][:120]}") from None


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
