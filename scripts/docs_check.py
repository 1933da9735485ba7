"""Run every command the documentation shows, on the bundled sample, so the docs cannot rot.

A command is a line of a ```bash block, or a ``$ `` line of a ```console block (a trailing
backslash continues it, and so do the ``> `` lines of a loop), in README.md or docs/*.md. Each
page runs top to bottom in its own scratch directory (a page's later commands read what its
earlier ones wrote), with the repository's `data/`, `tune_configs/` and `scripts/` linked in and
the venv's `crpbot` on PATH.
Output lines in the docs are illustrations, not expectations: the check is that every command
exits 0. A block that cannot run here (an AWS cluster, the full development data) is preceded by
``<!-- docs-check: not run: REASON -->``; such blocks are listed with their reason, never hidden.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINKED = ("data", "tune_configs", "scripts")
NOT_RUN = re.compile(r"<!--\s*docs-check:\s*not run:\s*(.+?)\s*-->")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    commands: tuple[str, ...]
    not_run_reason: str | None


def _joined(lines: list[str]) -> list[str]:
    """Join backslash-continued lines into one command each."""
    commands: list[str] = []
    pending = ""
    for line in lines:
        piece = line.strip() if pending else line
        if line.rstrip().endswith("\\"):
            pending += piece.rstrip()[:-1].rstrip() + " "
            continue
        commands.append(pending + piece)
        pending = ""
    if pending:
        commands.append(pending)
    return commands


def blocks_of(page: Path) -> list[Block]:
    """The runnable blocks of one Markdown page, in order."""
    lines = page.read_text().split("\n")
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = re.match(r"^```(\w+)?\s*$", lines[index])
        if not opening:
            index += 1
            continue
        kind = opening.group(1) or ""
        end = index + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        body = lines[index + 1 : end]
        if kind == "bash":
            commands = [c for c in _joined(body) if c.strip() and not c.lstrip().startswith("#")]
        elif kind == "console":
            prompted: list[str] = []
            taking = False
            for line in body:
                if line.startswith("$ "):
                    prompted.append(line[2:])
                    taking = line.rstrip().endswith("\\")
                elif line.startswith("> ") and prompted:  # the shell's second prompt: a loop's body
                    prompted[-1] += "\n" + line[2:]
                elif taking:
                    prompted.append(line)
                    taking = line.rstrip().endswith("\\")
            commands = _joined(prompted)
        else:
            commands = []
        if commands:
            before = "\n".join(lines[max(0, index - 3) : index])
            reason = NOT_RUN.search(before)
            found.append(Block(page, index + 1, tuple(commands), reason.group(1) if reason else None))
        index = end + 1
    return found


def pages(repo: Path) -> list[Path]:
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]


def run_page(page: Path, blocks: list[Block], repo: Path, timeout_s: float) -> list[str]:
    """Run one page's commands in a scratch directory; the failures, as one line each."""
    runnable = [block for block in blocks if block.not_run_reason is None]
    if not runnable:
        return []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix=f"docs-check-{page.stem}-") as scratch:
        for name in LINKED:
            os.symlink(repo / name, Path(scratch) / name)
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        for block in runnable:
            for command in block.commands:
                started = time.monotonic()
                print(f"$ {command}", flush=True)
                try:
                    result = subprocess.run(
                        ["bash", "-o", "pipefail", "-c", command],
                        cwd=scratch,
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=timeout_s,
                    )
                    code = result.returncode
                    tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
                except subprocess.TimeoutExpired:
                    code, tail = -1, [f"timed out after {timeout_s:.0f} s"]
                where = f"{page.relative_to(repo)}:{block.line}"
                print(f"  -> exit {code} in {time.monotonic() - started:.1f} s", flush=True)
                if code != 0:
                    failures.append(f"{where}: `{command}` exited {code}: {tail[0]}")
                    return failures  # later commands of the page depend on this one
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO)
    parser.add_argument("--page", action="append", help="only these pages (file names)")
    parser.add_argument("--list", action="store_true", help="list the commands, run nothing")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per command")
    args = parser.parse_args(argv)
    chosen = [p for p in pages(args.repo) if not args.page or p.name in args.page]
    failures: list[str] = []
    for page in chosen:
        blocks = blocks_of(page)
        for block in blocks:
            state = f"not run: {block.not_run_reason}" if block.not_run_reason else "run"
            print(f"{page.relative_to(args.repo)}:{block.line}: {len(block.commands)} command(s), {state}")
        if not args.list:
            failures += run_page(page, blocks, args.repo, args.timeout)
    for failure in failures:
        print(f"FAILED {failure}")
    print(f"docs-check: {len(failures)} page(s) failed of {len(chosen)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
