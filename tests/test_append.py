"""``crpbot data append``: overlap dropped, conflicts refused, gaps reported, a SIGKILL loses nothing."""

from __future__ import annotations

import fcntl
import hashlib
import re
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from crpbot.cli import main
from crpbot.data.append import AddedRun, append_bars, write_bars
from crpbot.data.bars import load_bars
from crpbot.errors import CrpbotError


@pytest.fixture(scope="module")
def real_rows(sample_path) -> pd.DataFrame:
    return pd.read_parquet(sample_path("BTC")).iloc[:2000].reset_index(drop=True)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save(rows: pd.DataFrame, path: Path) -> Path:
    """Rows in the file format of ``path`` (the dataset layouts ``append`` writes)."""
    bars = load_bars(_parquet(rows, path.parent / f"src-{path.stem}.parquet"))
    write_bars(bars.frame, path, expected_fingerprint=bars.fingerprint)
    return path


def _parquet(rows: pd.DataFrame, path: Path) -> Path:
    rows.reset_index(drop=True).to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".feather", ".json"])
def test_append_drops_identical_overlap_reports_gaps_and_prints_the_fingerprint(
    tmp_path, real_rows, suffix, capsys
):
    dataset = save(real_rows.iloc[:1000], tmp_path / f"BTC-USD_1m{suffix}")
    new = _parquet(real_rows.iloc[900:1500], tmp_path / "new.parquet")
    assert main(["data", "append", "--coin", "BTC", "--from", str(new), "--to", str(dataset)]) == 0
    expected = load_bars(_parquet(real_rows.iloc[:1500], tmp_path / "expected.parquet"))
    out = capsys.readouterr().out
    assert "1,500 bars (500 added, 100 identical overlapping bars dropped)" in out
    assert f"fingerprint {expected.fingerprint}" in out and "gap:" not in out
    assert load_bars(dataset).fingerprint == expected.fingerprint

    later = _parquet(real_rows.iloc[1600:1700], tmp_path / "later.parquet")
    result = append_bars("BTC", later, dataset)
    gap_start, gap_end = real_rows["timestamp"].iloc[1499], real_rows["timestamp"].iloc[1600]
    assert result.new_gaps == [(gap_start, gap_end, 100)]
    assert any(line.startswith(f"gap: {gap_start} -> {gap_end} (100 bars missing") for line in result.lines())
    assert load_bars(dataset).fingerprint == result.fingerprint
    again = append_bars("BTC", later, dataset)
    assert (again.added, again.duplicates, again.fingerprint) == (0, 100, result.fingerprint)


def test_a_conflicting_bar_is_refused_naming_it_and_the_file_is_unchanged(tmp_path, real_rows):
    dataset = save(real_rows.iloc[:1000], tmp_path / "BTC-USD_1m.parquet")
    before = digest(dataset)
    revised = real_rows.iloc[950:1100].copy()
    revised.loc[960, "close"] = revised.loc[960, "high"]
    revised.loc[970, "volume"] += 1.0
    new = _parquet(revised, tmp_path / "new.parquet")
    when = real_rows["timestamp"].iloc[960]
    with pytest.raises(
        CrpbotError, match=f"new.parquet: 2 bar.*conflict.*first at {re.escape(str(when))}: close"
    ) as caught:
        append_bars("BTC", new, dataset)
    assert "\n" not in str(caught.value)
    eth = _parquet(real_rows.iloc[1000:1100], tmp_path / "ETH-USD_1m.parquet")
    with pytest.raises(CrpbotError, match="ETH-USD_1m.parquet holds ETH-USD bars"):
        append_bars("BTC", eth, dataset)
    assert digest(dataset) == before


# The append runs in a real subprocess that is SIGKILLed at a point of the write: right
# after the temp file's bytes are written (before fsync), and between the fsynced write and
# the rename. Patching os.fsync / os.replace in that process picks the moment; nothing in
# crpbot knows about it.
KILL_AT = """
import os, signal, sys
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
setattr(os, sys.argv[1], die)
from crpbot.cli import main
main(["data", "append", "--coin", "BTC", "--from", sys.argv[2], "--to", sys.argv[3]])
"""


def test_a_sigkill_while_writing_or_before_the_rename_leaves_the_old_file(tmp_path, real_rows):
    dataset = save(real_rows.iloc[:1000], tmp_path / "BTC-USD_1m.parquet")
    before, fingerprint = digest(dataset), load_bars(dataset).fingerprint
    new = _parquet(real_rows.iloc[1000:2000], tmp_path / "new.parquet")
    for point in ("fsync", "replace"):
        proc = subprocess.run(
            [sys.executable, "-c", KILL_AT, point, str(new), str(dataset)], capture_output=True, text=True
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        assert digest(dataset) == before and load_bars(dataset).fingerprint == fingerprint
        left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".BTC-USD_1m.tmp-")]
        assert len(left) == 1, "the killed write's temp file is beside the dataset, not over it"
    result = append_bars("BTC", new, dataset)
    assert result.rows == 2000 and load_bars(dataset).fingerprint == result.fingerprint
    assert not list(tmp_path.glob(".BTC-USD_1m.tmp-*")), "the next append clears the killed one's temp file"


def test_a_second_append_while_one_writes_is_refused(tmp_path, real_rows):
    dataset = save(real_rows.iloc[:1000], tmp_path / "BTC-USD_1m.parquet")
    new = _parquet(real_rows.iloc[1000:1100], tmp_path / "new.parquet")
    with open(tmp_path / ".BTC-USD_1m.parquet.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # what a running append holds
        with pytest.raises(CrpbotError, match="another append is writing it"):
            append_bars("BTC", new, dataset)
    assert append_bars("BTC", new, dataset).added == 100
    with pytest.raises(CrpbotError, match="nowhere is not a directory"):
        append_bars("BTC", new, tmp_path / "nowhere" / "BTC-USD_1m.parquet")


def test_a_bar_still_forming_is_dropped_and_the_next_download_appends_it_finished(tmp_path, real_rows):
    """The two-download sequence: mid-minute, the last bar is partial; a minute later it is final."""
    dataset = save(real_rows.iloc[:1000], tmp_path / "BTC-USD_1m.parquet")
    opened = real_rows["timestamp"].iloc[1099]  # the bar still forming at the first download
    partial = real_rows.iloc[900:1100].copy()
    partial.loc[1099, ["high", "low", "close"]] = partial.loc[1099, "open"]
    partial.loc[1099, "volume"] /= 3
    first = _parquet(partial, tmp_path / "download-1.parquet")
    finished = _parquet(real_rows.iloc[1000:1101], tmp_path / "download-2.parquet")

    taken = append_bars("BTC", first, dataset, now=opened + pd.Timedelta(seconds=25))
    assert (taken.added, taken.duplicates, taken.forming) == (99, 100, [opened])
    assert taken.after_end.bars == 99 and not taken.filled_gaps
    assert load_bars(dataset).frame["timestamp"].iloc[-1] == real_rows["timestamp"].iloc[1098]
    assert any(
        line.startswith("dropped 1 bar(s) still forming") and opened.strftime("%H:%M") in line
        for line in taken.lines()
    )

    # a minute later: bar 1099 has closed (bar 1100 closes exactly now: closed too)
    now = real_rows["timestamp"].iloc[1100] + pd.Timedelta(minutes=1)
    complete = append_bars("BTC", finished, dataset, now=now)
    assert (complete.added, complete.duplicates, complete.forming) == (2, 99, [])
    expected = load_bars(_parquet(real_rows.iloc[:1101], tmp_path / "expected.parquet"))
    assert load_bars(dataset).fingerprint == complete.fingerprint == expected.fingerprint

    # what the drop prevents: a partial bar once written makes its finished download a conflict
    stored = save(real_rows.iloc[:1000], tmp_path / "stored-BTC-USD_1m.parquet")
    append_bars("BTC", first, stored, now=now)
    with pytest.raises(CrpbotError, match="1 bar.*conflict"):
        append_bars("BTC", finished, stored, now=now)
    with pytest.raises(CrpbotError, match="every bar is still forming"):
        append_bars(
            "BTC", _parquet(partial.iloc[-1:], tmp_path / "one.parquet"), tmp_path / "new.parquet", now=opened
        )


def test_bars_that_fill_old_gaps_are_reported_per_gap_apart_from_the_appended_ones(tmp_path, real_rows):
    holes = real_rows.drop(index=[*range(100, 112), *range(500, 510)])
    dataset = save(holes.iloc[: 1000 - 22], tmp_path / "BTC-USD_1m.parquet")
    new = _parquet(
        pd.concat([real_rows.iloc[90:120], real_rows.iloc[505:507], real_rows.iloc[995:1050]]),
        tmp_path / "new.parquet",
    )
    result = append_bars("BTC", new, dataset)
    ts = real_rows["timestamp"]
    assert result.added == 12 + 2 + 50 and result.new_gaps == [], "what is left of a gap is not new"
    assert result.filled_gaps == [
        AddedRun(12, ts.iloc[100], ts.iloc[111], still_missing=0),
        AddedRun(2, ts.iloc[505], ts.iloc[506], still_missing=8),
    ]
    assert result.after_end == AddedRun(50, ts.iloc[1000], ts.iloc[1049]) and result.before_start is None
    lines = result.lines()
    assert (
        "filled 2 gap(s) of the old file: 12 bars 2023-03-17 01:40 -> 2023-03-17 01:51 (gap closed), "
        "2 bars 2023-03-17 08:25 -> 2023-03-17 08:26 (8 bars still missing there)"
    ) in lines
    assert "appended after the end: 50 bars 2023-03-17 16:40 -> 2023-03-17 17:29" in lines
    assert [gap[2] for gap in load_bars(dataset).report.gaps] == [5, 3]
