"""The core imports torch and numpy only; orchestration libraries stay out of it."""
import json
import subprocess
import sys

import pytest

CORE = ["config", "errors", "resources", "fingerprint", "data", "synthetic", "metrics", "layers",
        "blocks", "model", "losses", "train", "evaluate_loop", "parallel", "forkpool", "startup", "checkpoint", "catalogue", "convert"]
FORBIDDEN = ["mlflow", "optuna", "typer", "pandas", "rich", "sklearn", "scipy", "dlf.study",
             "dlf.tracking", "dlf.executor", "dlf.tune", "dlf.report", "dlf.cli", "dlf.queue"]

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


@pytest.mark.slow
def test_core_modules_import_no_orchestration():
    code = _PROBE % (CORE, FORBIDDEN)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout)
    offenders = {name: mods for name, mods in seen.items() if mods}
    assert offenders == {}, f"core modules pulling in orchestration libraries: {offenders}"


def test_cli_help_does_not_import_torch():
    code = "import sys\nfrom dlf.cli import app\nprint('torch' in sys.modules, 'mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_planning_a_study_loads_neither_torch_nor_mlflow(tmp_path):
    """Expansion (configs, data fingerprints) is what a fully cached re-run does: it must stay light."""
    code = """
import sys
from dlf.study import expand
from dlf.studyfile import load_study
specs = expand(load_study("quickstart"), data_root=None)
print(len(specs), 'torch' in sys.modules, 'mlflow' in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[1:] == ["False", "False"], out.stdout
