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
from crpbot.data.append import append_bars, write_bars
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
