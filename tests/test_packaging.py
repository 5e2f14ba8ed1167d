"""The wheel ships the built-in catalogue, studies and paper numbers for non-editable installs."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("hatchling")
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)]
    subprocess.run(cmd, check=True, capture_output=True)
    (whl,) = out.glob("dlf_ablate-*.whl")
    return whl


@pytest.mark.slow
def test_wheel_contains_builtin_resources(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("ablations", "studies", "spaces"):
        shipped = {Path(n).name for n in names if n.startswith(f"dlf/_builtin/{folder}/")}
        assert shipped == {p.name for p in (ROOT / folder).glob("*.yaml")}
    assert "dlf/_builtin/reports/paper_tables.yaml" in names
    assert any(n.endswith("entry_points.txt") for n in names)


@pytest.mark.slow
def test_installed_wheel_finds_resources_from_another_directory(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = (
        "from dlf.resources import resource_dir, paper_tables_path;"
        "import dlf; assert 'site' in dlf.__file__, dlf.__file__;"
        "print(sorted(p.name for p in resource_dir('ablations').glob('*.yaml'))[:1]);"
        "print(paper_tables_path().is_file())"
    )
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, capture_output=True, text=True)
    lines = out.stdout.split("\n")
    assert lines[0] != "[]" and lines[1] == "True"
