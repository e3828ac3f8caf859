"""The tree passes ruff (pyproject's rules), benchmarks included, and the whole package (the
core and the feature folders mapped into it) passes strict mypy ([tool.mypy]): part of the test
command."""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_ruff_finds_nothing() -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is not installed (it is in the test extras of pyproject.toml)"
    bench = sorted(p for p in (REPO / "bench").iterdir() if p.is_file())
    r = subprocess.run([ruff, "check", "--no-cache", ".", *map(str, bench)], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_strict_finds_nothing(tmp_path: Path) -> None:
    mypy = shutil.which("mypy", path=str(Path(sys.executable).parent)) or shutil.which("mypy")
    assert mypy, "mypy is not installed (it is in the test extras of pyproject.toml)"
    # The package as setuptools installs it, which mypy cannot follow by itself: the core's
    # entries, and each folder that pyproject's package-dir maps to anklume.<name> (agent/...).
    pkg = tmp_path / "anklume"
    pkg.mkdir()
    for entry in (REPO / "anklume").iterdir():
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    for name, folder in pyproject["tool"]["setuptools"]["package-dir"].items():
        if name != "anklume":
            (pkg / name.removeprefix("anklume.")).symlink_to(REPO / folder)
    r = subprocess.run([mypy, "--config-file", str(REPO / "pyproject.toml"), "anklume"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
