"""What a pipeline run shows while its coins run: one progress row per coin; the logs go to a file.

Ray forwards every worker's output (the chains, their Ray Train workers, Tune trials and ensemble
members, the raylet's warnings) to the driver and prints it to whatever ``sys.stdout`` and
``sys.stderr`` are at that moment. While the chains run, :class:`RunConsole` stands in for both:
every line goes to the run's log file; a coin's own lines (``[BTC-USD] ...``) move that coin's
row; the driver's own lines and Ray's system messages (the raylet's: a worker killed for memory,
a task that cannot be scheduled; the autoscaler's) still print, the workers' do not. The rows
are a live view on a terminal and one plain line per stage otherwise (a CI log, a pipe). With
``verbose`` every line streams to the terminal as well, as it did before the view existed, and
no view is drawn.

Whatever the mode, each coin's end prints one line, its error when it failed: nothing that went
wrong is hidden, only the workers' chatter, which the log file keeps whole.
"""

from __future__ import annotations

import io
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TextIO

LOG_NAME = "pipeline.log"
# A chain's last line: once every finished coin's has arrived, no more of its output is on the way.
CHAIN_END = "chain finished"
FAILED = "failed: "
# How long the console waits at the end for the lines Ray is still forwarding (seconds).
END_WAIT = 10.0
QUIET_GAP = 0.5

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Ray prefixes a worker's forwarded line with its source: "(chain-BTC-USD pid=12)".
_WORKER = re.compile(r"^\([^()]*pid=[^()]*\) ?")
# The one system message known to be harmless here: the chains claim no CPU, so the raylet starts
# more worker processes than a node has CPUs (the chains, Train's controllers, trials, members)
# and warns at 4x. Its only switch, worker_maximum_startup_concurrency, would also change how many
# workers start at once; this console leaves the setting alone and the warning in the log.
_HARMLESS = re.compile(r"^\(raylet\) WARNING: \d+ PYTHON worker processes have been started on node")
_COIN = re.compile(r"\[(?P<coin>[A-Z0-9]+-[A-Z0-9]+)(?: seed (?P<seed>\d+))?\] (?P<message>.*)$")
# The chain's own stage lines (crpbot.pipeline.chain), in the order a chain reaches them.
STAGES = (
    ("training the recipe", "recipe"),
    ("recipe on validation", "validation check"),
    ("fallback search", "search"),
    ("seed ensemble", "ensemble"),
    ("scoring the", "test evaluation"),
)
_EPOCH = re.compile(r"^Epoch (\d+)/(\d+):")
_EPOCH_PART = re.compile(r"^\s*epoch (\d+): [\d,]+/[\d,]+ windows \((\d+)%\)")
_SEEDS = re.compile(r"\((\d+) seeds?\)")
_TRIALS = re.compile(r"^Search \S+: (\d+) trials")
_TRIAL_DONE = re.compile(r"^trial (\d+)/(\d+) done")


@dataclass
class CoinProgress:
    """One coin's row: its stage, the epochs or trials done in it, and when it began."""

    coin: str
    stage: str = "waiting"
    started: float = field(default_factory=time.monotonic)
    unit: str = ""
    done: float = 0.0  # epochs (a fraction within a long one) or trials done in this stage
    total: int | None = None
    members: int = 1  # ensemble members training side by side
    epochs: dict[str | None, float] = field(default_factory=dict)
    ended: str | None = None  # the coin's end, once its chain returned
    last_line: bool = False  # the chain's own last line (CHAIN_END or a failure) arrived

    def update(self, message: str, seed: str | None) -> bool:
        """Read one of the coin's lines; True when the row's stage changed."""
        if message == CHAIN_END or message.startswith(FAILED):
            self.last_line = True
            return False
        for prefix, stage in STAGES:
            if seed is None and message.startswith(prefix):
                self.stage, self.started = stage, time.monotonic()
                self.unit, self.done, self.total, self.epochs = "", 0.0, None, {}
                seeds = _SEEDS.search(message)
                self.members = int(seeds.group(1)) if seeds else 1
                return True
        if match := _EPOCH.match(message):
            self._epochs(seed, float(match.group(1)), int(match.group(2)))
        elif match := _EPOCH_PART.match(message):
            self._epochs(seed, int(match.group(1)) - 1 + int(match.group(2)) / 100, None)
        elif match := _TRIALS.match(message):
            self.unit, self.total = "trial", int(match.group(1))
        elif match := _TRIAL_DONE.match(message):
            self.unit, self.done, self.total = "trial", float(match.group(1)), int(match.group(2))
        return False

    def _epochs(self, seed: str | None, done: float, per_member: int | None) -> None:
        self.epochs[seed] = done
        self.unit, self.done = "epoch", sum(self.epochs.values())
        if per_member is not None:
            self.total = per_member * self.members

    def cells(self, now: float) -> tuple[str, str, str, str, str]:
        """coin, stage, progress, time in the stage, ETA of the stage ("up to": early stopping)."""
        if self.ended is not None:
            return self.coin, self.ended, "", "", ""
        progress = eta = ""
        elapsed = now - self.started
        if self.total:
            shown = int(self.done)
            progress = f"{self.unit} {shown}/{self.total}"
            if 0 < self.done < self.total:
                eta = f"{elapsed / self.done * (self.total - self.done):.0f} s"
        return self.coin, self.stage, progress, f"{elapsed:.0f} s", eta


class _Stream(io.TextIOBase):
    """What ``sys.stdout`` or ``sys.stderr`` is while the console runs: whole lines to the console."""

    def __init__(self, console: RunConsole, original: TextIO) -> None:
        self.console, self.original, self.pending = console, original, ""

    def write(self, text: str) -> int:
        with self.console.lock:
            lines = (self.pending + text).split("\n")
            self.pending = lines.pop()
            for line in lines:
                self.console.line(line, self.original)
        return len(text)

    def isatty(self) -> bool:
        return self.original.isatty()

    @property
    def encoding(self) -> str:
        return getattr(self.original, "encoding", None) or "utf-8"

    def drain(self) -> None:
        if self.pending:
            self.write("\n")


class RunConsole:
    """The terminal and the log file of one pipeline run, for the ``with`` block the chains run in.

    ``finished(coin, line)`` is the driver's word that a chain returned (the line prints in every
    mode). On leaving, the console waits (up to :data:`END_WAIT` s) for the finished
    chains' last lines, so that nothing a chain printed arrives after the caller's table.
    """

    def __init__(self, log_path: Path, coins: list[str], *, verbose: bool = False) -> None:
        self.log_path, self.verbose = Path(log_path), verbose
        self.rows = {coin: CoinProgress(coin) for coin in coins}
        self.lock = threading.RLock()
        self.arrived = threading.Condition(self.lock)
        self.last_arrival = time.monotonic()
        self.stdout: TextIO = sys.stdout
        self.stderr: TextIO = sys.stderr
        self.live = None
        self.file: TextIO | None = None

    def __enter__(self) -> RunConsole:
        self.stdout, self.stderr = sys.stdout, sys.stderr
        self.streams = (_Stream(self, self.stdout), _Stream(self, self.stderr))
        sys.stdout, sys.stderr = self.streams
        if not self.verbose and self.stdout.isatty():
            from rich.console import Console
            from rich.live import Live

            self.live = Live(
                get_renderable=self._table,
                console=Console(file=self.stdout),
                refresh_per_second=2,
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self.live.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self._await_last_lines()
        for stream in self.streams:
            stream.drain()
        if self.live is not None:
            self.live.stop()
        sys.stdout, sys.stderr = self.stdout, self.stderr
        if self.file is not None:
            self.file.close()

    def line(self, raw: str, original: TextIO) -> None:
        """One whole line written to stdout or stderr (the lock is held)."""
        text = _ANSI.sub("", raw)
        self._log(text)
        self.last_arrival = time.monotonic()
        worker = _WORKER.match(text)
        if self.verbose:
            original.write(raw + "\n")
            original.flush()
        elif worker is None and not _HARMLESS.match(text):
            self._show(text)  # the driver's own line, or Ray's word on the system
        if worker is not None and (coin := _COIN.search(text[worker.end() :])):
            row = self.rows.get(coin["coin"])
            if row is not None and row.update(coin["message"], coin["seed"]) and not self.verbose:
                if self.live is None:
                    self._show(f"{row.coin}: {row.stage}")
        self.arrived.notify_all()

    def finished(self, coin: str, line: str, *, process_died: bool = False) -> None:
        """A chain returned, or its process died (which sends no last line): say so in every mode."""
        with self.lock:
            row = self.rows[coin]
            row.ended = line.removeprefix(f"== {coin}: ")
            row.last_line = row.last_line or process_died
            if self.verbose:
                self.stdout.write(line + "\n")
                self.stdout.flush()
            else:
                self._show(line)
            self._log(line)

    def _log(self, text: str) -> None:
        # opened with the first line: a run that fails before anything ran (Ray did not start)
        # leaves its run directory empty, so that it is removed and the rerun is not refused
        if self.file is None:
            self.file = self.log_path.open("a", encoding="utf-8", buffering=1)
        self.file.write(text + "\n")

    def _show(self, text: str) -> None:
        if self.live is not None:
            self.live.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            self.stdout.write(text + "\n")
            self.stdout.flush()

    def _await_last_lines(self) -> None:
        deadline = time.monotonic() + END_WAIT
        with self.arrived:
            while time.monotonic() < deadline and not all(row.last_line for row in self.rows.values()):
                self.arrived.wait(deadline - time.monotonic())
            while time.monotonic() < deadline and time.monotonic() - self.last_arrival < QUIET_GAP:
                self.arrived.wait(QUIET_GAP)

    def _table(self):
        from rich.table import Table

        table = Table(box=None, header_style="bold")
        for name in ("coin", "stage", "progress", "in stage", "ETA"):
            table.add_column(name)
        now = time.monotonic()
        # No lock: rich holds its own while it draws, and a line being shown above the view holds
        # this console's then waits for rich's. A row read mid-update is redrawn half a second later.
        for row in self.rows.values():
            table.add_row(*row.cells(now))
        return table
