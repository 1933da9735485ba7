"""Causal, stationary features of 1-minute bars.

Every feature at row t uses bars <= t only (rolling windows and recursive averages,
never centred or backward-filled), and every feature is a ratio, a return or a
bounded oscillator: absolute price or volume levels would let a model memorise the
price regime of its training period. Features are computed per gap-free segment,
so no window spans a gap; the first ``WARMUP_BARS`` rows of each segment are NaN
(undefined, to be dropped downstream, never zero-filled).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from crpbot.data.bars import Bars, timestamps_ns

FEATURE_VERSION = "1"
# Longest window (sma 120) plus room for the recursive averages (EMA 26 + 9, Wilder 14)
# to forget their start: their initial-value weight is below 1e-3 after 120 bars.
WARMUP_BARS = 120
# Live prediction computes features on a trailing slice of bars, not from the segment start.
# Rolling windows are exact after WARMUP_BARS, but a recursive average keeps the weight
# (1 - alpha)^n of the slice's first bar after n bars; the slowest here is Wilder's 14-bar
# average (13/14 per bar). After HISTORY_BARS that weight is below 1e-12, so features on a
# slice of HISTORY_BARS + lookback bars equal the full-history ones far below float32
# resolution (tests/test_serving.py checks the predictions; 120 bars alone differ by ~1e-3
# standard deviations in MACD and ATR).
HISTORY_BARS = math.ceil(math.log(1e-12) / math.log(13 / 14))

FEATURE_NAMES: tuple[str, ...] = (
    # returns and volatility
    "log_ret_1",
    "log_ret_5",
    "log_ret_15",
    "log_ret_60",
    "rvol_5",
    "rvol_15",
    "rvol_60",
    "atr_14_rel",
    # bar shape
    "range_rel",
    "body_rel",
    "upper_wick_rel",
    "lower_wick_rel",
    "close_in_range",
    # trend: price vs averages, as ratios
    "close_sma_15",
    "close_sma_30",
    "close_sma_60",
    "close_sma_120",
    "close_ema_12",
    "close_ema_26",
    "sma_15_sma_60",
    # oscillators
    "rsi_14",
    "macd_rel",
    "macd_signal_rel",
    "macd_hist_rel",
    "bb_pos_20",
    "bb_width_20",
    "close_high_60",
    "close_low_60",
    # volume, relative to its own recent history
    "vol_z_15",
    "vol_z_60",
    "vol_ratio_5_60",
    "vol_ratio_1_60",
    # calendar
    "tod_sin",
    "tod_cos",
    "dow_sin",
    "dow_cos",
    "session_asia",
    "session_europe",
    "session_us",
)

_MINUTES_PER_DAY = 24 * 60
_MINUTES_PER_WEEK = 7 * _MINUTES_PER_DAY


def feature_manifest() -> dict:
    """What an artifact stores so that a later run can refuse features it was not trained on."""
    return {"version": FEATURE_VERSION, "names": list(FEATURE_NAMES), "warmup_bars": WARMUP_BARS}


def compute_features(bars: Bars) -> pd.DataFrame:
    """Feature table aligned with ``bars.frame`` (same index), NaN during each segment's warm-up."""
    frame = bars.frame
    # one block, a column per feature (rows of the transpose): the DataFrame wraps it without a copy
    table = np.full((len(FEATURE_NAMES), len(frame)), np.nan)
    columns = dict(zip(FEATURE_NAMES, table, strict=True))
    starts = np.flatnonzero(np.r_[True, np.diff(bars.segment_ids) != 0])
    ends = np.r_[starts[1:], len(frame)]
    for start, end in zip(starts, ends, strict=True):
        if end - start <= WARMUP_BARS:
            continue
        for name, values in price_volume_features(frame.iloc[start:end]).items():
            columns[name][start + WARMUP_BARS : end] = values[WARMUP_BARS:]
    calendar = _calendar_features(timestamps_ns(frame["timestamp"]))
    defined = ~np.isnan(columns["log_ret_1"])
    for name, values in calendar.items():
        columns[name][defined] = values[defined]
    return pd.DataFrame(table.T, index=frame.index, columns=list(FEATURE_NAMES), copy=False)


def price_volume_features(segment: pd.DataFrame) -> dict[str, np.ndarray]:
    """All non-calendar features of one gap-free segment (vectorised; pandas rolling is causal)."""
    open_, high, low = segment["open"], segment["high"], segment["low"]
    close, volume = segment["close"], segment["volume"]
    log_close = np.log(close)
    ret_1 = log_close.diff()
    out: dict[str, pd.Series] = {f"log_ret_{n}": log_close.diff(n) for n in (1, 5, 15, 60)}
    for n in (5, 15, 60):
        out[f"rvol_{n}"] = ret_1.rolling(n).std(ddof=0)
    previous_close = close.shift(1)
    true_range = np.maximum(
        high - low, np.maximum((high - previous_close).abs(), (low - previous_close).abs())
    )
    out["atr_14_rel"] = true_range.ewm(alpha=1 / 14, adjust=False).mean() / close

    bar_range = high - low
    out["range_rel"] = bar_range / close
    out["body_rel"] = (close - open_) / close
    out["upper_wick_rel"] = (high - np.maximum(open_, close)) / close
    out["lower_wick_rel"] = (np.minimum(open_, close) - low) / close
    out["close_in_range"] = ((close - low) / bar_range.where(bar_range > 0)).fillna(0.5)

    sma = {n: close.rolling(n).mean() for n in (15, 20, 30, 60, 120)}
    ema = {n: close.ewm(span=n, adjust=False).mean() for n in (12, 26)}
    for n in (15, 30, 60, 120):
        out[f"close_sma_{n}"] = close / sma[n] - 1
    for n in (12, 26):
        out[f"close_ema_{n}"] = close / ema[n] - 1
    out["sma_15_sma_60"] = sma[15] / sma[60] - 1

    change = close.diff()
    gain = change.clip(lower=0).ewm(alpha=1 / 14, adjust=False).mean()
    loss = (-change).clip(lower=0).ewm(alpha=1 / 14, adjust=False).mean()
    movement = gain + loss
    out["rsi_14"] = (gain / movement.where(movement > 0)).fillna(0.5)
    macd = ema[12] - ema[26]
    signal = macd.ewm(span=9, adjust=False).mean()
    out["macd_rel"] = macd / close
    out["macd_signal_rel"] = signal / close
    out["macd_hist_rel"] = (macd - signal) / close
    band = 2 * close.rolling(20).std(ddof=0)
    out["bb_pos_20"] = ((close - sma[20]) / band.where(band > 0)).fillna(0.0)
    out["bb_width_20"] = 2 * band / sma[20]
    out["close_high_60"] = close / high.rolling(60).max() - 1
    out["close_low_60"] = close / low.rolling(60).min() - 1

    for n in (15, 60):
        mean, std = volume.rolling(n).mean(), volume.rolling(n).std(ddof=0)
        out[f"vol_z_{n}"] = ((volume - mean) / std.where(std > 0)).fillna(0.0)
    volume_60 = volume.rolling(60).mean()
    out["vol_ratio_5_60"] = (volume.rolling(5).mean() / volume_60.where(volume_60 > 0)).fillna(1.0)
    out["vol_ratio_1_60"] = (volume / volume_60.where(volume_60 > 0)).fillna(1.0)
    return {name: series.to_numpy(dtype="float64") for name, series in out.items()}


def _calendar_features(ns: np.ndarray) -> dict[str, np.ndarray]:
    """Cyclical time of day / day of week and trading-session flags (UTC, bar open time)."""
    # 1970-01-01 was a Thursday: shift so that minute 0 of the week is Monday 00:00
    minute_of_week = (ns // 60_000_000_000 + 3 * _MINUTES_PER_DAY) % _MINUTES_PER_WEEK
    # a lookup table over the 10,080 minutes of a week is cheaper than trigonometry per row
    week = np.arange(_MINUTES_PER_WEEK)
    minute_of_day = week % _MINUTES_PER_DAY
    hour = minute_of_day / 60
    day_angle = 2 * np.pi * minute_of_day / _MINUTES_PER_DAY
    week_angle = 2 * np.pi * week / _MINUTES_PER_WEEK
    weekday = week < 5 * _MINUTES_PER_DAY
    tables = {
        "tod_sin": np.sin(day_angle),
        "tod_cos": np.cos(day_angle),
        "dow_sin": np.sin(week_angle),
        "dow_cos": np.cos(week_angle),
        "session_asia": (hour < 8).astype("float64"),
        "session_europe": ((hour >= 7) & (hour < 16)).astype("float64"),
        "session_us": (weekday & (hour >= 13.5) & (hour < 20)).astype("float64"),
    }
    return {name: table[minute_of_week] for name, table in tables.items()}
