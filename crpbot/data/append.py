"""Merge newly downloaded bars into a dataset file without ever rewriting its history.

New bars arrive every day; the dataset a model was trained on must only grow. Overlapping
rows that are identical are dropped (re-downloads overlap), a row that disagrees with the
dataset is refused (the feed revised a bar, or it is another market: a human must decide),
and new gaps are reported, never filled. The merged file is written beside the old one,
fsynced, read back and checked, and only then renamed over it: a crash at any point leaves
the old file intact (and a hidden ``.<name>.tmp-*`` file, removed by the next append). One
append at a time per dataset (a lock file beside it): a second one is refused, not queued,
since two merges of the same old file would each drop the other's rows.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from crpbot.data.bars import COLUMNS, Bars, load_bars, normalize_coin, timestamps_ns, validate_bars
from crpbot.errors import CrpbotError

WRITABLE = (".parquet", ".feather", ".json", ".csv")


@dataclass(frozen=True)
class AppendResult:
    """What an append did: rows added, overlap dropped, gaps it introduced, the new fingerprint."""

    path: Path
    rows: int
    added: int
    duplicates: int
    fingerprint: str
    created: bool
    new_gaps: list[tuple[pd.Timestamp, pd.Timestamp, int]] = field(default_factory=list)

    def lines(self) -> list[str]:
        action = "created" if self.created else "updated"
        out = [
            f"{action} {self.path}: {self.rows:,} bars ({self.added:,} added, "
            f"{self.duplicates:,} identical overlapping bars dropped)"
        ]
        out += [
            f"gap: {after} -> {before} ({missing:,} bars missing, not filled)"
            for after, before, missing in self.new_gaps
        ]
        out.append(f"fingerprint {self.fingerprint}")
        return out


def append_bars(coin: str, new_path: str | Path, dataset_path: str | Path) -> AppendResult:
    """Merge the bars of ``new_path`` into ``dataset_path`` (created when absent), atomically."""
    coin = normalize_coin(coin)
    new_path, dataset_path = Path(new_path), Path(dataset_path)
    if dataset_path.suffix.lower() not in WRITABLE:
        raise CrpbotError(f"cannot write {dataset_path.name}: use one of {', '.join(WRITABLE)}")
    if not dataset_path.parent.is_dir():
        raise CrpbotError(f"cannot write {dataset_path}: {dataset_path.parent} is not a directory")
    new = load_bars(new_path)
    _check_coin(new, coin, new_path)
    with _only_writer(dataset_path):
        return _merge_into(new, new_path, dataset_path, coin)


def _merge_into(new: Bars, new_path: Path, dataset_path: Path, coin: str) -> AppendResult:
    """The merge and the write, run while holding the dataset's lock."""
    created = not dataset_path.exists()
    if created:
        merged = new
        added, duplicates, old_gaps = len(new), 0, set()
    else:
        old = load_bars(dataset_path)
        _check_coin(old, coin, dataset_path)
        fresh = _check_overlap(old, new, new_path.name, dataset_path.name)
        added, duplicates = int(fresh.sum()), len(new) - int(fresh.sum())
        if added == 0:
            return AppendResult(dataset_path, len(old), 0, duplicates, old.fingerprint, False)
        rows = pd.concat([old.frame, new.frame[fresh]], ignore_index=True)
        merged = validate_bars(rows, name=dataset_path.name, source=str(dataset_path))
        old_gaps = set(old.report.gaps)
    write_bars(merged.frame, dataset_path, expected_fingerprint=merged.fingerprint)
    return AppendResult(
        path=dataset_path,
        rows=len(merged),
        added=added,
        duplicates=duplicates,
        fingerprint=merged.fingerprint,
        created=created,
        new_gaps=[gap for gap in merged.report.gaps if gap not in old_gaps],
    )


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
