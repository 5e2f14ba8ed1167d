"""The core imports torch and numpy only; orchestration libraries stay out of it."""
import subprocess
import sys

import pytest

CORE = ["config", "errors", "resources", "fingerprint", "data", "synthetic", "metrics", "layers",
        "model", "losses", "train", "checkpoint", "catalogue", "convert"]
FORBIDDEN = ["mlflow", "optuna", "typer", "pandas", "rich", "sklearn", "scipy", "dlf.study",
             "dlf.tracking", "dlf.executor", "dlf.tune", "dlf.report", "dlf.cli", "dlf.queue"]


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_no_orchestration(module):
    code = (
        f"import sys, dlf.{module}\n"
        f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"dlf.{module} pulls in {out.stdout.strip()}"


def test_cli_help_does_not_import_torch():
    code = "import sys\nfrom dlf.cli import app\nprint('torch' in sys.modules, 'mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
