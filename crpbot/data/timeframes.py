"""Higher-timeframe features: the 1-minute features recomputed on k-minute bars, placed causally.

A model of 1-minute windows sees an hour at most; the trend of the last few hours is what a
15- or 60-minute chart shows. For each timeframe k (config key ``timeframes``), the 1-minute
bars of every gap-free segment are resampled to k-minute bars on clock boundaries (a bar covers
minutes [s, s+k) with s a multiple of k since the epoch: open of the first, highest high, lowest
low, close of the last, summed volume). A partial bar at a segment start is dropped, and so is
the bar still forming at a segment end. On a k-bar series the price and volume features of
``crpbot.data.features`` are computed exactly as on 1-minute bars (the same 32 non-calendar
features, the same warm-up of ``WARMUP_BARS`` k-bars); the calendar features are not repeated
(row t's own time of day is already a feature).

Alignment: the k-bar covering [s, s+k) closes with minute s+k-1's close, so it is usable from
row s+k-1 on. Row t gets the features of the last k-bar with s+k-1 <= t, never the one still
forming, so every value at row t uses bars <= t only. Rows before a segment's first defined
k-bar feature are NaN and dropped downstream, like the 1-minute warm-up. Columns are named
``tf{k}_{feature}``, e.g. ``tf15_log_ret_1``: the last closed 15-minute bar's log return.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from crpbot.data.bars import Bars, timestamps_ns
from crpbot.data.features import (
    FEATURE_NAMES,
    HISTORY_BARS,
    WARMUP_BARS,
    feature_manifest,
    price_volume_features,
)

# the calendar features describe the row's own minute; a k-bar's open time adds nothing
CALENDAR = ("tod_sin", "tod_cos", "dow_sin", "dow_cos", "session_asia", "session_europe", "session_us")
TIMEFRAME_FEATURES: tuple[str, ...] = tuple(name for name in FEATURE_NAMES if name not in CALENDAR)
_MINUTE_NS = 60_000_000_000


def column_names(timeframes: Sequence[int]) -> tuple[str, ...]:
    """``tf{k}_{feature}`` for every timeframe, in the order given."""
    return tuple(f"tf{k}_{name}" for k in timeframes for name in TIMEFRAME_FEATURES)


def artifact_manifest(timeframes: Sequence[int]) -> dict:
    """An artifact's features.json: the 1-minute manifest, plus the timeframe columns and their
    warm-up when the model has timeframes (unchanged without, so older artifacts still match)."""
    manifest = feature_manifest()
    if timeframes:
        manifest["names"] += list(column_names(timeframes))
        manifest["timeframes"] = list(timeframes)
        manifest["timeframe_warmup_minutes"] = warmup_minutes(timeframes)
    return manifest


def bars_before_defined(timeframes: Sequence[int], k_bars: int = WARMUP_BARS) -> int:
    """1-minute rows of a segment (or of a live slice) before row r reads a k-bar that has
    ``k_bars`` whole k-bars before it, for every timeframe, wherever the clock boundaries fall.

    The first whole k-bar starts at offset o <= k-1; row r reads bar floor((r-o+1)/k) - 1, which
    is >= ``k_bars`` for every o once r >= k * (k_bars + 2) - 2. ``k_bars = WARMUP_BARS``: the
    rows before the first defined feature; ``HISTORY_BARS``: the live history (the recursive
    averages over k-bars forget a slice's start as they do over 1-minute bars).
    """
    return max((k * (k_bars + 2) - 2 for k in timeframes), default=0)


def warmup_minutes(timeframes: Sequence[int], first_minute: int | None = None) -> int:
    """Rows of a gap-free run before every feature (1-minute and each timeframe's) is defined:
    exactly, for a run whose first bar opens at ``first_minute`` (minutes since the epoch), else
    the most any run needs."""
    if first_minute is None:
        return max(WARMUP_BARS, bars_before_defined(timeframes, WARMUP_BARS))
    # row r reads bar floor((r - o + 1) / k) - 1, >= WARMUP_BARS from r = o + (WARMUP_BARS + 1)k - 1
    exact = [-first_minute % k + (WARMUP_BARS + 1) * k - 1 for k in timeframes]
    return max([WARMUP_BARS, *exact])


def history_minutes(timeframes: Sequence[int]) -> int:
    """Trailing bars live prediction featurises before a window, so features equal training's."""
    return max(HISTORY_BARS, bars_before_defined(timeframes, HISTORY_BARS))


def timeframe_features(bars: Bars, timeframes: Sequence[int]) -> np.ndarray:
    """``float64 [len(bars), len(column_names(timeframes))]``: each row's last closed k-bar features."""
    out = np.full((len(bars), len(TIMEFRAME_FEATURES) * len(timeframes)), np.nan)
    if not timeframes:
        return out
    minutes = timestamps_ns(bars.frame["timestamp"]) // _MINUTE_NS
    ohlcv = ("open", "high", "low", "close", "volume")
    prices = {name: bars.frame[name].to_numpy(dtype=np.float64) for name in ohlcv}
    starts = np.flatnonzero(np.r_[True, np.diff(bars.segment_ids) != 0])
    ends = np.r_[starts[1:], len(bars)]
    for block, k in enumerate(timeframes):
        columns = slice(block * len(TIMEFRAME_FEATURES), (block + 1) * len(TIMEFRAME_FEATURES))
        for start, end in zip(starts, ends, strict=True):
            offset = int(-minutes[start] % k)  # rows before the first clock boundary: a partial bar
            count = (end - start - offset) // k  # whole k-bars; the trailing partial one is forming
            if count <= WARMUP_BARS:
                continue
            first = start + offset
            whole = {name: values[first : first + count * k] for name, values in prices.items()}
            table = _resampled_features(whole, k)
            # row r reads the last bar closed at r: bar j closes at first + (j+1)k - 1
            rows = np.arange(first + k - 1, end)
            out[rows, columns] = table[(rows - first + 1) // k - 1]
    return out


def feature_table(bars: Bars, timeframes: Sequence[int]) -> pd.DataFrame:
    """The 1-minute features and, after them, each timeframe's ``tf{k}_`` columns, aligned with
    ``bars.frame``: the columns a model with these ``timeframes`` reads (``crpbot features``)."""
    from crpbot.data.features import compute_features

    table = compute_features(bars)
    if timeframes:
        extra = pd.DataFrame(
            timeframe_features(bars, timeframes), columns=list(column_names(timeframes)), index=table.index
        )
        table = pd.concat([table, extra], axis=1)
    return table


def _resampled_features(prices: dict[str, np.ndarray], k: int) -> np.ndarray:
    """The timeframe features of one segment's whole k-bars (``[count, F]``, NaN in the warm-up)."""
    shaped = {name: values.reshape(-1, k) for name, values in prices.items()}
    frame = pd.DataFrame(
        {
            "open": shaped["open"][:, 0],
            "high": shaped["high"].max(axis=1),
            "low": shaped["low"].min(axis=1),
            "close": shaped["close"][:, -1],
            "volume": shaped["volume"].sum(axis=1),
        }
    )
    features = price_volume_features(frame)
    table = np.column_stack([features[name] for name in TIMEFRAME_FEATURES])
    table[:WARMUP_BARS] = np.nan
    return table
