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


def test_doctor_names_every_missing_package_in_one_line() -> None:
    proc = _doctor("import sys", "sys.modules['sklearn'] = sys.modules['matplotlib'] = None")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "cannot import sklearn (metrics and the logistic baseline), matplotlib (reports" in proc.stderr


def test_a_search_without_matplotlib_stops_before_its_trials(monkeypatch, tmp_path) -> None:
    """The plots are drawn after every trial has run: a missing matplotlib is named up front."""
    from crpbot.config import CONFIG_DIR
    from crpbot.errors import CrpbotError
    from crpbot.search.space import load_search_space
    from crpbot.search.tune import run_search

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(CrpbotError, match=r"cannot draw its plots: matplotlib \(reports and search plots\)"):
        run_search(load_search_space(CONFIG_DIR / "smoke_search.yaml"), "BTC", storage=tmp_path)
    assert not (tmp_path / "tune-BTC-smoke_search").exists()
