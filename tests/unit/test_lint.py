"""The tree passes ruff (pyproject's rules), benchmarks included, and the core passes strict
mypy ([tool.mypy]): part of the test command."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_ruff_finds_nothing() -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is not installed (it is in the test extras of pyproject.toml)"
    bench = sorted(p for p in (REPO / "bench").iterdir() if p.is_file())
    r = subprocess.run([ruff, "check", "--no-cache", ".", *map(str, bench)], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_strict_finds_nothing_in_the_core() -> None:
    mypy = shutil.which("mypy", path=str(Path(sys.executable).parent)) or shutil.which("mypy")
    assert mypy, "mypy is not installed (it is in the test extras of pyproject.toml)"
    r = subprocess.run([mypy], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
