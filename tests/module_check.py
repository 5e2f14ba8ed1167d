"""``--check-modules``: fail the session unless a function of every dlf module ran.

For the fast lane: ``python -m pytest -m "not slow and not cluster" --check-modules`` shows that
the fast tests exercise every module of the package. A trace function notes the source file of
each dlf function that starts in this process (code run in forked or spawned processes is not
seen); module and class bodies, which run on import alone, do not count. Tracing costs some speed,
hence an option; it uses ``sys.settrace``, so not together with a debugger or coverage.py. A module
that defines no function counts once it is imported.
"""
from __future__ import annotations

import ast
import os
import sys
import threading
from pathlib import Path

import pytest

_CO_OPTIMIZED = 0x1  # set on function code objects; module and class bodies lack it
_ran: set[str] = set()
_package: Path | None = None
_missing: list[str] | None = None  # set at the end of a --check-modules session


def pytest_addoption(parser) -> None:
    parser.addoption("--check-modules", action="store_true",
                     help="fail unless a function of every dlf module ran (for the fast lane)")


def pytest_configure(config) -> None:
    global _package
    if not config.getoption("--check-modules"):
        return
    import dlf

    _package = Path(dlf.__file__).parent  # as the code objects name their files
    prefix = f"{_package}{os.sep}"

    def trace(frame, event, arg):
        code = frame.f_code
        if code.co_flags & _CO_OPTIMIZED and code.co_filename.startswith(prefix):
            _ran.add(code.co_filename)
        return None  # no line events: only which functions started

    sys.settrace(trace)
    threading.settrace(trace)


def missing_modules(package: Path, ran: set[str]) -> list[str]:
    """Modules of ``package`` none of whose functions ran (function-free modules: not imported)."""
    missing = []
    for path in sorted(package.rglob("*.py")):
        name = ".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__")
        if str(path) in ran:
            continue
        tree = ast.parse(path.read_text())
        defines = any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in ast.walk(tree))
        if defines or name not in sys.modules:
            missing.append(name)
    return missing


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus) -> None:
    global _missing
    if _package is None:
        return
    sys.settrace(None)
    threading.settrace(None)
    _missing = missing_modules(_package, _ran)
    if _missing:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter) -> None:
    if _missing is None:
        return
    terminalreporter.write_sep("-", "check-modules")
    if _missing:
        terminalreporter.write_line(f"no function ran of: {', '.join(_missing)}; add a fast test for each", red=True)
    else:
        terminalreporter.write_line("a function of every dlf module ran", green=True)
