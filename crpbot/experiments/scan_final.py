"""The final period of a scan: withheld from the search, read once by a confirmation, recorded.

A scan picks its best cell on walk-forward folds; that choice is biased by the number of cells
tried, so its figures are not an estimate of the chosen cell's worth. The last ``holdout_days``
of every coin's bars (days of bars present, like the folds') are split off before anything else
(:func:`split_final`): the scan's folds see only the bars before them, and the final period's bars
are only hashed (its fingerprint) until a confirmation trains the chosen cell on the bars before
it and scores it once on it (:func:`final_fold`).

Once scored, a final period is spent: a model chosen after seeing it would be chosen on it. The
ledger (one JSON line per confirmation, default ``~/.crpbot/final_periods.jsonl``, or
``$CRPBOT_FINAL_LEDGER``) records every confirmation's coin, period and fingerprints, and a
later confirmation of the same coin whose final period overlaps a recorded one in time is
refused unless the user says so (``--reuse-final``). Overlap in time, not an equal fingerprint,
is what makes two final periods "the same": a file with a few more days appended, or the same
market from another exchange, has another fingerprint but largely the same future already seen.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crpbot.data.folds import DAY_BARS, Fold, FoldSpec
from crpbot.errors import CrpbotError

LEDGER_ENV = "CRPBOT_FINAL_LEDGER"


@dataclass(frozen=True)
class FinalPeriod:
    """One coin's final period: its first and last minute (ns), bars, and both parts' fingerprints."""

    coin: str
    start_ns: int
    end_ns: int
    rows: int
    fingerprint: str  # of the final period's bars
    development_fingerprint: str  # of the bars before it, the only ones the scan reads

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "start": iso(self.start_ns), "end": iso(self.end_ns)}

    def overlaps(self, entry: dict[str, Any]) -> bool:
        return (
            entry["coin"] == self.coin
            and entry["start_ns"] <= self.end_ns
            and self.start_ns <= entry["end_ns"]
        )


def split_final(bars: Any, holdout_days: float, coin: str) -> tuple[Any, FinalPeriod]:
    """(bars before the final period, the final period) of one coin's bars."""
    from crpbot.data.bars import timestamps_ns

    if isinstance(holdout_days, bool) or not isinstance(holdout_days, (int, float)) or not holdout_days > 0:
        raise CrpbotError(f"invalid --holdout-days {holdout_days!r}: must be a number > 0")
    rows = int(round(holdout_days * DAY_BARS))
    if rows >= len(bars):
        raise CrpbotError(
            f"final period of {holdout_days:g} days ({rows:,} bars) is longer than {coin}'s data "
            f"({len(bars):,} bars, {len(bars) / DAY_BARS:.1f} days)"
        )
    development = bars.head(len(bars) - rows)
    final = bars.tail(rows)
    stamps = timestamps_ns(final.frame["timestamp"])
    return development, FinalPeriod(
        coin=coin,
        start_ns=int(stamps[0]),
        end_ns=int(stamps[-1]),
        rows=rows,
        fingerprint=final.fingerprint,
        development_fingerprint=development.fingerprint,
    )


def final_fold(
    timestamps: np.ndarray, final: FinalPeriod, spec: FoldSpec, *, lookback: int, horizon: int
) -> Fold:
    """The confirmation's one fold on a coin's usable rows (int64 ns): test is the final period,
    validation the ``spec.val_days`` before it and train the ``spec.train_days`` before that (from
    the first row with ``expanding``), with the folds' purge of ``lookback + horizon`` rows between."""
    timestamps = np.asarray(timestamps, dtype=np.int64)
    rows = spec.rows()
    purge = lookback + horizon
    test_start = int(np.searchsorted(timestamps, final.start_ns))
    val_end = test_start - purge
    val_start = val_end - rows["val"]
    train_end = val_start - purge
    train_start = 0 if spec.window == "expanding" else max(0, train_end - rows["train"])
    if len(timestamps) - test_start <= purge or train_end - train_start <= purge:
        raise CrpbotError(
            f"{final.coin}: no room for the confirmation's train and validation periods before "
            "the final period"
        )
    bounds = {
        "train": (train_start, train_end),
        "val": (val_start, val_end),
        "test": (test_start, len(timestamps)),
    }
    split_times = {name: (int(timestamps[a]), int(timestamps[b - 1])) for name, (a, b) in bounds.items()}
    return Fold(index=0, bounds=bounds, split_times=split_times)


def ledger_path(path: str | Path | None = None) -> Path:
    """The ledger given, else ``$CRPBOT_FINAL_LEDGER``, else ``~/.crpbot/final_periods.jsonl``."""
    if path is not None:
        return Path(path)
    return Path(os.environ.get(LEDGER_ENV) or Path.home() / ".crpbot" / "final_periods.jsonl")


def read_ledger(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise CrpbotError(
                    f"{path}: line {number} is not JSON; the ledger must not be edited"
                ) from exc
    return entries


def earlier_uses(path: Path, final: FinalPeriod, scan_out: Path, cell: str) -> list[dict[str, Any]]:
    """Ledger entries whose final period overlaps ``final``, other than this scan's own confirmation
    of ``cell`` (a rerun of the same scan resumes that confirmation; it is not a second look)."""
    own = str(scan_out.resolve())
    return [
        entry
        for entry in read_ledger(path)
        if final.overlaps(entry) and not (entry["scan"] == own and entry["cell"] == cell)
    ]


def is_recorded(path: Path, final: FinalPeriod, scan_out: Path, cell: str) -> bool:
    own = str(scan_out.resolve())
    return any(
        final.overlaps(entry) and entry["scan"] == own and entry["cell"] == cell
        for entry in read_ledger(path)
    )


def record_use(path: Path, final: FinalPeriod, scan_out: Path, cell: str, reused: bool) -> dict[str, Any]:
    """Append this confirmation to the ledger, before its model reads the final period."""
    entry = {
        **final.to_dict(),
        "scan": str(scan_out.resolve()),
        "cell": cell,
        "reused": reused,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:  # one line per write: appends from two scans do not interleave
        handle.write(json.dumps(entry) + "\n")
    return entry


def iso(ns: int) -> str:
    return np.datetime_as_string(np.datetime64(int(ns), "ns"), unit="m") + "Z"
