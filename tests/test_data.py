"""Loading, validation and explicit repairs of real bars; every bad input fails with one clear line."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crpbot.data.bars import COINS, default_input, load_bars, normalize_coin
from crpbot.errors import CrpbotError


@pytest.fixture(scope="module")
def real_rows(sample_path) -> pd.DataFrame:
    """The first 600 real BTC bars: small enough to corrupt and rewrite per test."""
    return pd.read_parquet(sample_path("BTC")).iloc[:600].reset_index(drop=True)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bundled_sample_loads_with_its_real_gap(sample_path):
    bars = load_bars(sample_path("BTC"))
    assert len(bars) == bars.report.rows_read == bars.report.rows_kept == 30_160
    assert str(bars.frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert list(bars.frame.columns) == ["timestamp", "open", "high", "low", "close", "volume"]
    assert bars.frame["timestamp"].is_monotonic_increasing and bars.frame["timestamp"].is_unique
    assert bars.report.repairs == []
    [(after, before, missing)] = bars.report.gaps
    assert (after, before, missing) == (
        pd.Timestamp("2023-03-24 12:39", tz="UTC"),
        pd.Timestamp("2023-03-24 14:00", tz="UTC"),
        80,
    )
    assert bars.segment_ids.dtype == np.int32
    assert np.array_equal(np.unique(bars.segment_ids), [0, 1])
    first_after_gap = int(np.argmax(bars.frame["timestamp"] == before))
    assert bars.segment_ids[first_after_gap - 1] == 0 and bars.segment_ids[first_after_gap] == 1
    assert bars.coin == "BTC-USD"
    assert any("80 bars missing" in line for line in bars.report.lines())


@pytest.mark.parametrize("alias", ["BTC", "btc", "BTC-USD", " btc-usd "])
def test_normalize_coin_accepts_short_and_long_names(alias):
    assert normalize_coin(alias) == "BTC-USD"


def test_unknown_coin_lists_the_known_ones():
    with pytest.raises(CrpbotError, match="unknown coin 'DOGE'.*BTC, ETH, SOL"):
        normalize_coin("DOGE")


def test_default_input_does_not_depend_on_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for coin in COINS:
        assert default_input(coin.split("-")[0]).is_file()


def test_csv_and_parquet_of_the_same_rows_give_the_same_bars(tmp_path, real_rows):
    csv = tmp_path / "bars.csv"
    iso = real_rows["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    real_rows.assign(timestamp=iso).to_csv(csv, index=False)
    parquet = tmp_path / "bars.parquet"
    real_rows.to_parquet(parquet)
    from_csv, from_parquet = load_bars(csv), load_bars(parquet)
    pd.testing.assert_frame_equal(from_csv.frame, from_parquet.frame)
    assert from_csv.fingerprint == from_parquet.fingerprint


def test_epoch_milliseconds_and_naive_timestamps_are_read_as_utc(tmp_path, real_rows):
    expected = load_bars(_write(tmp_path / "ref.parquet", real_rows)).frame
    epoch = real_rows.assign(timestamp=real_rows["timestamp"].to_numpy(dtype="datetime64[ms]").view("int64"))
    naive = real_rows.assign(timestamp=real_rows["timestamp"].dt.tz_localize(None))
    for name, frame, repair in (("ms.csv", epoch, "read as ms"), ("naive.parquet", naive, "naive")):
        bars = load_bars(_write(tmp_path / name, frame))
        pd.testing.assert_frame_equal(bars.frame, expected)
        assert any(repair in line for line in bars.report.repairs)


def test_unsorted_rows_and_exact_duplicates_are_repaired_and_reported(tmp_path, real_rows):
    clean = load_bars(_write(tmp_path / "clean.parquet", real_rows))
    messy = pd.concat([real_rows.iloc[300:], real_rows.iloc[:300], real_rows.iloc[[10, 20]]])
    bars = load_bars(_write(tmp_path / "messy.parquet", messy))
    pd.testing.assert_frame_equal(bars.frame, clean.frame)
    assert bars.fingerprint == clean.fingerprint
    assert (bars.report.rows_read, bars.report.rows_kept) == (602, 600)
    assert any("sorted" in r for r in bars.report.repairs)
    assert any("2 exact duplicate" in r for r in bars.report.repairs)


def test_gaps_are_reported_and_split_segments_never_filled(tmp_path, real_rows):
    holed = real_rows.drop(index=range(100, 110)).drop(index=[400])
    bars = load_bars(_write(tmp_path / "holed.parquet", holed))
    assert len(bars) == 589
    assert [missing for _, _, missing in bars.report.gaps] == [10, 1]
    assert np.array_equal(np.unique(bars.segment_ids), [0, 1, 2])
    gap_lines = [line for line in bars.report.lines() if line.startswith("gap:")]
    assert [line.split("(")[1] for line in gap_lines] == [
        "10 bars missing, not filled)",
        "1 bar missing, not filled)",
    ]


def test_many_gaps_print_the_first_few_and_a_total(tmp_path, real_rows):
    holed = real_rows.drop(index=[*range(50, 600, 50), 301, 302])  # 11 gaps, 13 bars
    lines = load_bars(_write(tmp_path / "holed.parquet", holed)).report.lines()
    assert sum(line.startswith("gap:") for line in lines) == 5
    assert lines[-1] == "... and 6 more gaps, 13 bars missing in all"


def _set(column: str, row: int, value) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        frame[column] = frame[column].astype(str) if isinstance(value, str) else frame[column]
        frame.loc[row, column] = value
        return frame

    return change


BAD_CONTENT = {
    "nan close": (_set("close", 50, np.nan), "NaN or infinite close"),
    "inf high": (_set("high", 50, np.inf), "NaN or infinite high"),
    "nan volume": (_set("volume", 7, np.nan), "NaN or infinite volume"),
    "zero price": (_set("low", 50, 0.0), "non-positive low"),
    "negative price": (_set("open", 3, -1.0), "non-positive open"),
    "high below low": (lambda f: f.assign(high=f["high"].where(f.index != 9, f["low"] - 1)), "high < low"),
    "close above high": (_set("close", 9, 1e9), "open/close outside"),
    "negative volume": (_set("volume", 50, -0.5), "negative volume"),
    "missing column": (lambda f: f.drop(columns=["volume"]), "missing column.*volume"),
    "no rows": (lambda f: f.iloc[:0], "no rows"),
    "conflicting duplicate timestamp": (
        lambda f: pd.concat([f, f.iloc[[5]].assign(volume=f["volume"].iloc[5] + 1.0)]),
        "share a timestamp",
    ),
    "sub-minute timestamp": (
        lambda f: f.assign(timestamp=f["timestamp"] + pd.Timedelta(seconds=30)),
        "not on a whole minute",
    ),
    "missing timestamp": (
        lambda f: f.assign(timestamp=f["timestamp"].where(f.index != 4)),
        "missing timestamp",
    ),
    "text price": (_set("close", 4, "abc"), "close is not numeric"),
    "boolean volume": (lambda f: f.assign(volume=f["volume"] > 0), "column volume holds booleans"),
    "text timestamp": (_set("timestamp", 4, "notadate"), "unparseable timestamp 'notadate' in row 5 of 600 "),
}


@pytest.mark.parametrize("case", sorted(BAD_CONTENT))
@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".feather"])
def test_bad_content_fails_with_one_clear_line_and_the_file_is_untouched(tmp_path, real_rows, case, suffix):
    corrupt, message = BAD_CONTENT[case]
    path = _write(tmp_path / f"bad{suffix}", corrupt(real_rows))
    before = digest(path)
    with pytest.raises(CrpbotError, match=message) as caught:
        load_bars(path)
    assert "\n" not in str(caught.value) and path.name in str(caught.value)
    assert digest(path) == before


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.parquet", b"", "file is empty"),
        ("corrupt.parquet", b"PAR1 this is not parquet at all", "unreadable parquet"),
        ("corrupt.csv", b"\x00\x01\x02\xff\xfe", "unreadable csv|missing column"),
        ("bars.txt", b"1,2,3", "unsupported file type .txt"),
        ("bars.json", b"[]", "no rows"),
        ("corrupt.json", b"[[1, 2", "unreadable json"),
        ("corrupt.feather", b"ARROW1 not really", "unreadable feather"),
    ],
)
def test_unreadable_files_fail_with_one_clear_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CrpbotError, match=message) as caught:
        load_bars(path)
    assert "\n" not in str(caught.value)
    assert path.read_bytes() == content


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(CrpbotError, match="input file not found: .*nope.parquet"):
        load_bars(tmp_path / "nope.parquet")


def test_a_directory_is_not_reported_as_missing(tmp_path):
    (tmp_path / "bars.parquet").mkdir()
    with pytest.raises(CrpbotError, match="input is a directory, not a file: .*bars.parquet"):
        load_bars(tmp_path / "bars.parquet")


def _write(path: Path, frame: pd.DataFrame) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".feather":  # freqtrade's layout: the time column is called date
        frame.rename(columns={"timestamp": "date"}).reset_index(drop=True).to_feather(path)
    else:
        frame.reset_index(drop=True).to_parquet(path)
    return path
