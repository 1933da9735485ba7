"""Tabular rows for tree models: a row's features plus past returns read a few bars back.

Trees see one row, not a window, so the recent path has to be spelled out as columns. The GBDT
baseline (``crpbot.evaluation.baselines``) and the GBDT model family (``crpbot.model.gbdt``)
build their rows here, the family from the very windows the recurrent models are scored on
(:func:`window_rows`), so training, evaluation and live prediction read the same columns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# (feature, lag in bars) of the baseline: the 5- and 15-bar returns lagged by their own length.
BASELINE_LAGS: tuple[tuple[str, int], ...] = (
    ("log_ret_1", 1),
    ("log_ret_1", 2),
    ("log_ret_1", 3),
    ("log_ret_5", 5),
    ("log_ret_15", 15),
)


def lookback_lags(lookback: int) -> tuple[tuple[str, int], ...]:
    """The model family's lags: the last few 1-bar returns, then 5- and 15-bar returns lagged by
    whole blocks, so together with the row's own ``log_ret_15`` they tile the lookback without
    overlap. Every lag is < ``lookback``: a window holds the bars it reads."""
    lags = [("log_ret_1", lag) for lag in (1, 2, 3, 4)]
    lags += [("log_ret_5", lag) for lag in (5, 10)]
    lags += [("log_ret_15", lag) for lag in range(15, lookback, 15)]
    return tuple((name, lag) for name, lag in lags if lag < lookback)


def lagged_columns(lags: Sequence[tuple[str, int]]) -> list[str]:
    """Column names of the lagged returns (``log_ret_5@10``: the 5-bar return 10 bars back)."""
    return [f"{name}@{lag}" for name, lag in lags]


def tabular_rows(
    features: np.ndarray,
    rows: np.ndarray,
    feature_names: Sequence[str],
    segment_ids: np.ndarray,
    lags: Sequence[tuple[str, int]],
) -> np.ndarray:
    """Row t's features plus each (feature, lag) read at t - lag (bars <= t only), float32.

    A lag that reaches before the first row or into another gap-free segment is NaN, which
    LightGBM and scikit-learn's histogram GBDT treat as missing.
    """
    rows = np.asarray(rows, dtype=np.int64)
    out = np.full((len(rows), features.shape[1] + len(lags)), np.nan, dtype=np.float32)
    out[:, : features.shape[1]] = features[rows]
    names = list(feature_names)
    for column, (name, lag) in enumerate(lags, start=features.shape[1]):
        back = rows - lag
        ok = back >= 0
        ok[ok] = segment_ids[back[ok]] == segment_ids[rows[ok]]
        out[ok, column] = features[back[ok], names.index(name)]
    return out


def window_rows(
    windows: np.ndarray, feature_names: Sequence[str], lags: Sequence[tuple[str, int]]
) -> np.ndarray:
    """:func:`tabular_rows` of ``[B, L, F]`` windows, each row read at its window's last bar."""
    count, lookback, width = windows.shape
    flat = np.ascontiguousarray(windows).reshape(count * lookback, width)
    ends = np.arange(count, dtype=np.int64) * lookback + lookback - 1
    return tabular_rows(flat, ends, feature_names, np.repeat(np.arange(count), lookback), lags)
