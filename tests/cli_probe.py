"""Bad commands run through ``crpbot.cli.main`` in one fresh Python process, to show each fails
before Ray: a fresh process because the test session's own Ray is running, one process for all
of a test's commands because each start (Python, crpbot, often torch) costs ~0.6-1.5 s on 2 cores.

Each command's exit code, stdout and stderr are captured separately, with whether ``ray`` was
imported or started by then and which watched paths exist after it. Anything written past the
capture (a logging handler holding the real stderr, a C library writing to fd 2) lands on the
process's real stdout/stderr, which must hold nothing but the JSON result.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_PROBE = """
import contextlib, io, json, os, sys
from crpbot.cli import main
commands, watched = json.loads(sys.argv[1]), json.loads(sys.argv[2])
results = []
for argv in commands:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    ray = sys.modules.get("ray")
    results.append({
        "code": code, "stdout": out.getvalue(), "stderr": err.getvalue(),
        "ray_imported": ray is not None, "ray_started": ray is not None and ray.is_initialized(),
        "existing": [path for path in watched if os.path.lexists(path)],
    })
sys.stdout.write(json.dumps(results))
"""


@dataclass(frozen=True)
class CommandResult:
    """What one command did in the probe process."""

    code: int
    stdout: str
    stderr: str
    ray_imported: bool
    ray_started: bool
    existing: list[str]  # the watched paths that exist after the command


def run_commands_in_a_fresh_process(
    commands: list[list[str]], *, cwd: Path, watched: Sequence[Path] = ()
) -> list[CommandResult]:
    """Run each of ``commands`` (crpbot argv lists), in order, in one new interpreter at ``cwd``."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(commands), json.dumps([str(path) for path in watched])],
        capture_output=True,
        text=True,
        cwd=cwd,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-2000:]
    return [CommandResult(**result) for result in json.loads(proc.stdout)]
