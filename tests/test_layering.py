"""The architecture as tests: the core imports torch and numpy only, and no module imports itself
back through a circle of ``dlf`` imports."""
import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import dlf

# The core: configuration, data, models (every family) and the training loop. Orchestration stays out of it.
CORE_TOP = ["config", "domains", "errors", "resources", "metrics", "startup"]
CORE_WINGS = ("data", "models", "train")
FORBIDDEN = ["mlflow", "optuna", "typer", "pandas", "rich", "sklearn", "scipy", "dlf.study", "dlf.run",
             "dlf.tune", "dlf.report", "dlf.cli", "dlf.cluster", "dlf.analysis"]

# One interpreter imports the core modules one by one and records, after each, which forbidden
# modules have appeared: the first module to show one is the culprit.
_PROBE = """
import importlib, json, sys
seen = {}
for name in %r:
    importlib.import_module("dlf." + name)
    seen[name] = [m for m in %r if m in sys.modules]
print(json.dumps(seen))
"""


def core_modules() -> list[str]:
    wings = [m[len("dlf."):] for m in _modules() if m.split(".")[1:2] and m.split(".")[1] in CORE_WINGS]
    return CORE_TOP + sorted(wings)


@pytest.mark.slow
def test_core_modules_import_no_orchestration():
    core = core_modules()
    assert {"models.dlf.model", "models.mult.model", "train.loop", "data.safe_pickle"} <= set(core)
    code = _PROBE % (core, FORBIDDEN)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout)
    offenders = {name: mods for name, mods in seen.items() if mods}
    assert offenders == {}, f"core modules pulling in orchestration libraries: {offenders}"


def _modules() -> dict[str, Path]:
    root = Path(dlf.__file__).parent
    found = {"dlf": root / "__init__.py"}
    for info in pkgutil.walk_packages([str(root)], prefix="dlf."):
        rel = Path(*info.name.split(".")[1:])
        path = root / rel / "__init__.py" if info.ispkg else (root / rel).with_suffix(".py")
        found[info.name] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every dlf module ``name`` imports, at module level or inside a function."""
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for a in node.names:
                full = f"{base}.{a.name}"
                out.add(full if full in known else base)
    return {m for m in out if m in known and m != name}


def test_no_import_circles():
    mods = _modules()
    graph = {name: _imports(name, path, set(mods)) for name, path in mods.items()}
    # a package's __init__ importing its own submodules is not a circle through the package
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == [], "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_cli_help_does_not_import_torch():
    code = "import sys\nfrom dlf.cli import app\nprint('torch' in sys.modules, 'mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_planning_a_study_loads_neither_torch_nor_mlflow(tmp_path):
    """Expansion (configs, data fingerprints) is what a fully cached re-run does: it must stay light."""
    code = """
import sys
from dlf.study.spec import expand
from dlf.study.file import load_study
specs = expand(load_study("quickstart"), data_root=None)
print(len(specs), 'torch' in sys.modules, 'mlflow' in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[1:] == ["False", "False"], out.stdout


def test_every_module_is_reachable_from_the_cli_or_the_tests():
    """No dead module: each is imported, through some chain, by the CLI or a test; model families are
    reached through the registry (their package, then the implementation their spec names)."""
    from dlf.models.registry import BUILTIN, family_spec

    mods = _modules()
    graph = {name: _imports(name, path, set(mods)) for name, path in mods.items()}
    graph["dlf.models.registry"] |= set(BUILTIN.values())  # discovered, not imported by name
    for family, package in BUILTIN.items():
        graph[package].add(family_spec(family).implementation.partition(":")[0])
    tests = Path(__file__).parent
    seen, todo = set(), ["dlf.cli"] + sorted({m for f in tests.glob("*.py") for m in _imports("tests", f, set(mods))})
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += graph.get(name, set()) | {p for p in mods if name.startswith(p + ".")}  # parents run first
    assert sorted(set(mods) - seen) == []
