"""The stage layering is enforced: import-linter keeps the contract, and breaks it on an upward import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    """Run import-linter on the ``crpbot`` package under ``root`` with the repo's contract."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
            "--config",
            str(REPO / "pyproject.toml"),
            "--no-cache",
        ],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_package_keeps_its_layers() -> None:
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path) -> None:
    """Plant ``data -> pipeline`` in a copy of the package: the lint must fail and name the import."""
    shutil.copytree(REPO / "crpbot", tmp_path / "crpbot", ignore=shutil.ignore_patterns("__pycache__"))
    bars = tmp_path / "crpbot" / "data" / "bars.py"
    bars.write_text(bars.read_text() + "\nfrom crpbot.pipeline.run import run_pipeline  # noqa: E402,F401\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "crpbot.data.bars -> crpbot.pipeline.run" in result.stdout
