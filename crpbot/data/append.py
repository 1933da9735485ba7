"""Merge newly downloaded bars into a dataset file without ever rewriting its history.

New bars arrive every day; the dataset a model was trained on must only grow. Overlapping
rows that are identical are dropped (re-downloads overlap), a row that disagrees with the
dataset is refused (the feed revised a bar, or it is another market: a human must decide),
and new gaps are reported, never filled. A bar whose minute has not closed yet (open time +
1 minute > now, UTC) is dropped with a message and never written: a download taken
mid-minute holds a partial last bar, and storing it would make the next download's finished
bar a conflict. Bars that fill gaps of the old file are reported per gap, apart from the bars
appended after its end. The merged file is written beside the old one,
fsynced, read back and checked, and only then renamed over it: a crash at any point leaves
the old file intact (and a hidden ``.<name>.tmp-*`` file, removed by the next append). One
append at a time per dataset (a lock file beside it): a second one is refused, not queued,
since two merges of the same old file would each drop the other's rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crpbot.data.bars import COLUMNS, MINUTE_NS, Bars, load_bars, normalize_coin, timestamps_ns, validate_bars
from crpbot.errors import CrpbotError

WRITABLE = (".parquet", ".feather", ".json", ".csv")
BAR = pd.Timedelta(minutes=1)


@dataclass(frozen=True)
class AddedRun:
    """Added bars in one place of the old file: how many, the first and last open time, and (for a
    gap of the old file) how many of that gap's bars are still missing."""

    bars: int
    first: pd.Timestamp
    last: pd.Timestamp
    still_missing: int = 0

    def __str__(self) -> str:
        return f"{self.bars:,} bars {_minute(self.first)} -> {_minute(self.last)}"

    def in_gap(self) -> str:
        left = f"{self.still_missing:,} bars still missing there" if self.still_missing else "gap closed"
        return f"{self} ({left})"


@dataclass(frozen=True)
class AppendResult:
    """What an append did: rows added (after the end, into old gaps, before the start), overlap
    dropped, bars still forming dropped, gaps it introduced, the new fingerprint."""

    path: Path
    rows: int
    added: int
    duplicates: int
    fingerprint: str
    created: bool
    new_gaps: list[tuple[pd.Timestamp, pd.Timestamp, int]] = field(default_factory=list)
    after_end: AddedRun | None = None
    filled_gaps: list[AddedRun] = field(default_factory=list)
    before_start: AddedRun | None = None
    forming: list[pd.Timestamp] = field(default_factory=list)
    now: pd.Timestamp | None = None

    def lines(self) -> list[str]:
        action = "created" if self.created else "updated"
        out = [
            f"{action} {self.path}: {self.rows:,} bars ({self.added:,} added, "
            f"{self.duplicates:,} identical overlapping bars dropped)"
        ]
        if self.forming:
            shown = ", ".join(_minute(bar) for bar in self.forming[:3]) + (
                ", ..." if len(self.forming) > 3 else ""
            )
            out.append(
                f"dropped {len(self.forming):,} bar(s) still forming at "
                f"{_minute(self.now, seconds=True)} UTC (open time + 1 minute > now): {shown}; "
                "not written, a later download brings them closed"
            )
        if self.after_end:
            out.append(f"appended after the end: {self.after_end}")
        if self.filled_gaps:
            out.append(
                f"filled {len(self.filled_gaps):,} gap(s) of the old file: "
                + ", ".join(run.in_gap() for run in self.filled_gaps)
            )
        if self.before_start:
            out.append(f"added before the start: {self.before_start}")
        out += [
            f"gap: {after} -> {before} ({missing:,} bars missing, not filled)"
            for after, before, missing in self.new_gaps
        ]
        out.append(f"fingerprint {self.fingerprint}")
        return out


def append_bars(
    coin: str, new_path: str | Path, dataset_path: str | Path, *, now: pd.Timestamp | None = None
) -> AppendResult:
    """Merge the closed bars of ``new_path`` into ``dataset_path`` (created when absent), atomically.

    ``now``: the UTC time that decides which bars have closed (default: the clock; tests pass their own).
    """
    coin = normalize_coin(coin)
    new_path, dataset_path = Path(new_path), Path(dataset_path)
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    if now.tzinfo is None:
        raise CrpbotError(f"now must be a UTC time, got the naive {now}")
    if dataset_path.suffix.lower() not in WRITABLE:
        raise CrpbotError(f"cannot write {dataset_path.name}: use one of {', '.join(WRITABLE)}")
    if not dataset_path.parent.is_dir():
        raise CrpbotError(f"cannot write {dataset_path}: {dataset_path.parent} is not a directory")
    new = load_bars(new_path)
    _check_coin(new, coin, new_path)
    new, forming = _closed_only(new, new_path, now)
    with _only_writer(dataset_path):
        result = _merge_into(new, new_path, dataset_path, coin)
    return dataclasses.replace(result, forming=forming, now=now)


def _closed_only(new: Bars, new_path: Path, now: pd.Timestamp) -> tuple[Bars | None, list[pd.Timestamp]]:
    """The bars whose minute has closed by ``now`` (None if none has), and the open times of the others."""
    open_times = new.frame["timestamp"]
    forming = (open_times + BAR > now).to_numpy()
    if not forming.any():
        return new, []
    dropped = list(open_times[forming])
    if forming.all():
        return None, dropped
    closed = validate_bars(new.frame[~forming], name=new_path.name, source=str(new_path))
    return closed, dropped


def _merge_into(new: Bars | None, new_path: Path, dataset_path: Path, coin: str) -> AppendResult:
    """The merge and the write, run while holding the dataset's lock."""
    created = not dataset_path.exists()
    if created and new is None:
        raise CrpbotError(f"{new_path.name}: every bar is still forming; nothing to write")
    if created:
        merged = new
        added, duplicates, placed = len(new), 0, {}
        old_gaps: list[tuple[pd.Timestamp, pd.Timestamp, int]] = []
    else:
        old = load_bars(dataset_path)
        _check_coin(old, coin, dataset_path)
        if new is None:
            return AppendResult(dataset_path, len(old), 0, 0, old.fingerprint, False)
        fresh = _check_overlap(old, new, new_path.name, dataset_path.name)
        added, duplicates = int(fresh.sum()), len(new) - int(fresh.sum())
        if added == 0:
            return AppendResult(dataset_path, len(old), 0, duplicates, old.fingerprint, False)
        rows = pd.concat([old.frame, new.frame[fresh]], ignore_index=True)
        merged = validate_bars(rows, name=dataset_path.name, source=str(dataset_path))
        old_gaps = old.report.gaps
        placed = _placed(old, new.frame["timestamp"][fresh])
    write_bars(merged.frame, dataset_path, expected_fingerprint=merged.fingerprint)
    return AppendResult(
        path=dataset_path,
        rows=len(merged),
        added=added,
        duplicates=duplicates,
        fingerprint=merged.fingerprint,
        created=created,
        new_gaps=[gap for gap in merged.report.gaps if not _inside_any(gap, old_gaps)],
        **placed,
    )


def _placed(old: Bars, added: pd.Series) -> dict[str, Any]:
    """Where the added bars went: after the old end, into which old gaps (one run per gap), before
    the old start (the ``AppendResult`` fields of the same names)."""
    old_ns, added_ns = timestamps_ns(old.frame["timestamp"]), timestamps_ns(added)
    times = added.reset_index(drop=True)

    def run(mask: np.ndarray, still_missing: int = 0) -> AddedRun | None:
        if not mask.any():
            return None
        chosen = times[mask]
        return AddedRun(int(mask.sum()), chosen.iloc[0], chosen.iloc[-1], still_missing)

    after, before = added_ns > old_ns[-1], added_ns < old_ns[0]
    inside = np.searchsorted(old_ns, added_ns)  # gap between old rows i-1 and i
    filled = []
    for i in np.unique(inside[~after & ~before]):
        mask = (inside == i) & ~after & ~before
        missing = int((old_ns[i] - old_ns[i - 1]) // MINUTE_NS) - 1
        filled.append(run(mask, missing - int(mask.sum())))
    return {"after_end": run(after), "filled_gaps": filled, "before_start": run(before)}


def _inside_any(
    gap: tuple[pd.Timestamp, pd.Timestamp, int], old_gaps: list[tuple[pd.Timestamp, pd.Timestamp, int]]
) -> bool:
    """A gap of the merged file within one of the old file's (what is left of a partly filled gap)."""
    return any(start <= gap[0] and gap[1] <= end for start, end, _ in old_gaps)


def _minute(when: pd.Timestamp | None, *, seconds: bool = False) -> str:
    return "" if when is None else when.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def write_bars(frame: pd.DataFrame, path: str | Path, *, expected_fingerprint: str) -> None:
    """Write validated bars to ``path`` atomically: temp file, fsync, read-back check, rename, fsync dir.

    The read-back compares fingerprints, so a format that would not store the bars exactly
    (a lossy float format) fails here instead of silently changing the dataset.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    tmp = path.parent / f".{path.stem}.tmp-{uuid.uuid4().hex[:12]}{suffix}"
    try:
        _write_format(frame, tmp, suffix)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        written = load_bars(tmp).fingerprint
        if written != expected_fingerprint:
            raise CrpbotError(
                f"{path.name}: the {suffix[1:]} file would not store the bars exactly; nothing written"
            )
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _write_format(frame: pd.DataFrame, path: Path, suffix: str) -> None:
    """Each format in the layout its readers expect (freqtrade's for .feather and .json)."""
    if suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif suffix == ".feather":
        date = frame["timestamp"].astype("datetime64[ms, UTC]")
        frame.drop(columns=["timestamp"]).assign(date=date)[["date", *COLUMNS[1:]]].to_feather(path)
    elif suffix == ".json":
        ms = timestamps_ns(frame["timestamp"]) // 1_000_000
        values = frame[list(COLUMNS[1:])].to_numpy().tolist()
        path.write_text(json.dumps([[int(t), *row] for t, row in zip(ms, values, strict=True)]))
    else:
        frame.assign(timestamp=frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(
            path, index=False, float_format="%.17g"
        )


@contextlib.contextmanager
def _only_writer(dataset_path: Path) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside the dataset; clear the temp files of appends that were killed."""
    with open(dataset_path.parent / f".{dataset_path.name}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CrpbotError(
                f"{dataset_path.name}: another append is writing it; run this one when it has finished"
            ) from None
        for leftover in dataset_path.parent.glob(f".{dataset_path.stem}.tmp-*{dataset_path.suffix.lower()}"):
            leftover.unlink(missing_ok=True)
        yield


def _check_coin(bars: Bars, coin: str, path: Path) -> None:
    if bars.coin and bars.coin != coin:
        raise CrpbotError(f"{path.name} holds {bars.coin} bars (from its name), not {coin}")


def _check_overlap(old: Bars, new: Bars, new_name: str, old_name: str) -> np.ndarray:
    """Mask of the new rows not in the dataset; refuses the first overlapping row that differs."""
    old_ns, new_ns = timestamps_ns(old.frame["timestamp"]), timestamps_ns(new.frame["timestamp"])
    _, in_old, in_new = np.intersect1d(old_ns, new_ns, assume_unique=True, return_indices=True)
    values = list(COLUMNS[1:])
    old_values = old.frame[values].to_numpy()[in_old]
    new_values = new.frame[values].to_numpy()[in_new]
    differs = (old_values != new_values).any(axis=1)
    if differs.any():
        row = int(np.argmax(differs))
        column = int(np.argmax(old_values[row] != new_values[row]))
        when = old.frame["timestamp"].iloc[in_old[row]]
        raise CrpbotError(
            f"{new_name}: {int(differs.sum()):,} bar(s) conflict with {old_name}; first at {when}: "
            f"{values[column]} {float(new_values[row, column])!r} vs {float(old_values[row, column])!r}; "
            "nothing written"
        )
    fresh = np.ones(len(new_ns), dtype=bool)
    fresh[in_new] = False
    return fresh
