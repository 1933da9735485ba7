"""freqtrade's candle files (``<PAIR>-1m.feather``, ``.json``) read to the same bars as Parquet."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from crpbot.data.bars import find_input, load_bars
from crpbot.errors import CrpbotError


@pytest.fixture(scope="module")
def real_rows(sample_path) -> pd.DataFrame:
    """The first 2,000 real BTC bars of the bundled sample."""
    return pd.read_parquet(sample_path("BTC")).iloc[:2000].reset_index(drop=True)


def write_freqtrade_feather(path: Path, rows: pd.DataFrame) -> Path:
    """What freqtrade writes: a ``date`` column (UTC, ms resolution) and the five OHLCV columns."""
    date = rows["timestamp"].astype("datetime64[ms, UTC]")
    rows.drop(columns=["timestamp"]).assign(date=date)[
        ["date", "open", "high", "low", "close", "volume"]
    ].to_feather(path)
    return path


def write_freqtrade_json(path: Path, rows: pd.DataFrame) -> Path:
    """freqtrade's JSON candles: ``[[epoch ms, open, high, low, close, volume], ...]``."""
    ms = rows["timestamp"].to_numpy(dtype="datetime64[ms]").view("int64")
    values = rows[["open", "high", "low", "close", "volume"]].to_numpy().tolist()
    path.write_text(json.dumps([[int(t), *v] for t, v in zip(ms, values, strict=True)]))
    return path


def test_feather_and_json_give_the_same_bars_as_parquet(tmp_path, real_rows):
    parquet = tmp_path / "BTC-USD_1m.parquet"
    real_rows.to_parquet(parquet)
    reference = load_bars(parquet)
    feather = load_bars(write_freqtrade_feather(tmp_path / "BTC_USDT-1m.feather", real_rows))
    candles = load_bars(write_freqtrade_json(tmp_path / "BTC_USDT-1m.json", real_rows))
    gzipped = tmp_path / "BTC_USDT-1m.json.gz"  # freqtrade's jsongz format
    gzipped.write_bytes(gzip.compress((tmp_path / "BTC_USDT-1m.json").read_bytes()))
    for bars in (feather, candles, load_bars(gzipped)):
        pd.testing.assert_frame_equal(bars.frame, reference.frame)
        assert bars.fingerprint == reference.fingerprint
        assert bars.coin == "BTC-USD", "the coin is read from freqtrade's pair name too"
        assert bars.report.repairs == [], "freqtrade's own layout needs no repair"


def test_freqtrade_files_get_the_same_validation(tmp_path, real_rows):
    broken = real_rows.copy()
    broken.loc[7, "high"] = broken.loc[7, "low"] - 1
    with pytest.raises(CrpbotError, match="BTC_USDT-1m.json: 1 row.*high < low"):
        load_bars(write_freqtrade_json(tmp_path / "BTC_USDT-1m.json", broken))
    shuffled = pd.concat([real_rows.iloc[1000:], real_rows.iloc[:1000]])
    bars = load_bars(write_freqtrade_feather(tmp_path / "BTC_USDT-1m.feather", shuffled))
    assert any("sorted" in repair for repair in bars.report.repairs)
    for content, message in (
        ({"BTC/USDT": []}, "not freqtrade candles"),
        ([[1, 2, 3]], "not freqtrade candles"),
        ([["2023-03-01", 1, 1, 1, 1, 1]], "candle 1 has no epoch-millisecond time"),
        ([[1677628800000, "x", 1, 1, 1, 1]], "column open is not numeric"),
    ):
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(content))
        with pytest.raises(CrpbotError, match=message) as caught:
            load_bars(path)
        assert "\n" not in str(caught.value)


def test_input_dir_finds_freqtrade_names_and_refuses_two_candidates(tmp_path, real_rows):
    feather = write_freqtrade_feather(tmp_path / "BTC_USDT-1m.feather", real_rows)
    assert find_input(tmp_path, "BTC") == feather
    with pytest.raises(CrpbotError, match="no input for ETH-USD in .*ETH-USD_1m.parquet or ETH_USDT-1m"):
        find_input(tmp_path, "eth")
    real_rows.to_parquet(tmp_path / "BTC-USD_1m.parquet")
    with pytest.raises(
        CrpbotError, match="several inputs for BTC-USD.*BTC-USD_1m.parquet, BTC_USDT-1m.feather"
    ):
        find_input(tmp_path, "BTC")
