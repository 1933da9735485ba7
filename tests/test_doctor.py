"""``crpbot doctor`` in its own process, as a user runs it on a new node.

The passing run starts its own local Ray instance, so it is marked ``own_ray`` and runs in the
second ``make test`` invocation, never beside the session's instance (one Ray instance per host).
"""

from __future__ import annotations

import subprocess
import sys

import pytest


def _doctor(*prelude: str) -> subprocess.CompletedProcess:
    code = "; ".join([*prelude, "from crpbot.cli import main", "raise SystemExit(main(['doctor']))"])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)


@pytest.mark.own_ray
def test_doctor_passes_on_this_machine() -> None:
    proc = _doctor()
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for expected in (
        "packages: torch",
        "ray 2.60.0",
        "GPUs seen by torch",
        "Ray: local instance started",
        "State API answers",
        "remote task ran on",
        "Ray: stopped",
        "doctor: OK",
    ):
        assert expected in out, out


def test_doctor_names_a_missing_package_in_one_line_before_ray_starts() -> None:
    proc = _doctor("import sys", "sys.modules['optuna'] = None")  # what an image without Optuna looks like
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "cannot import optuna (the fallback search)" in proc.stderr
    assert "Ray:" not in proc.stdout
