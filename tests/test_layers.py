"""The layer contract in pyproject.toml is enforced: an upward import fails `make lint`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "pitstore", tmp_path / "pitstore", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_package_keeps_its_layers(tree: Path) -> None:
    result = lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "upward"),
    [
        ("core/spec.py", "import pitstore.training.frames  # noqa"),  # core -> training
        ("online/codec.py", "from pitstore.transform import render_sql  # noqa"),  # sibling
        ("serving/scoring.py", "import pitstore.cli.app  # noqa"),  # anything -> cli
    ],
)
def test_an_upward_or_sideways_import_breaks_the_contract(
    tree: Path, module: str, upward: str
) -> None:
    path = tree / "pitstore" / module
    path.write_text(path.read_text() + f"\n{upward}\n")
    result = lint(tree)
    assert result.returncode == 1, result.stdout
    assert "BROKEN" in result.stdout and "1 broken" in result.stdout
