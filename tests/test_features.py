"""Features are causal (the future cannot change the past), stationary, and restart after a gap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crpbot.data.bars import Bars, load_bars
from crpbot.data.features import (
    FEATURE_NAMES,
    FEATURE_VERSION,
    WARMUP_BARS,
    compute_features,
    feature_manifest,
)


@pytest.fixture(scope="module")
def btc(sample_path) -> Bars:
    return load_bars(sample_path("BTC"))


@pytest.fixture(scope="module")
def btc_features(btc) -> pd.DataFrame:
    return compute_features(btc)


def bars_from(frame: pd.DataFrame, path: Path) -> Bars:
    frame.reset_index(drop=True).to_parquet(path)
    return load_bars(path)


def test_names_and_manifest():
    assert 35 <= len(FEATURE_NAMES) <= 45 and len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert feature_manifest() == {
        "version": FEATURE_VERSION,
        "names": list(FEATURE_NAMES),
        "warmup_bars": WARMUP_BARS,
    }


@pytest.mark.parametrize("coin", ["BTC", "ETH", "SOL"])
def test_nan_exactly_during_each_segment_warm_up(sample_path, coin):
    bars = load_bars(sample_path(coin))
    features = compute_features(bars)
    assert list(features.columns) == list(FEATURE_NAMES) and features.index.equals(bars.frame.index)
    starts = np.flatnonzero(np.r_[True, np.diff(bars.segment_ids) != 0])
    position = np.arange(len(bars)) - starts[bars.segment_ids]
    expected_undefined = position < WARMUP_BARS
    values = features.to_numpy()
    assert np.isnan(values[expected_undefined]).all()
    assert np.isfinite(values[~expected_undefined]).all()


@pytest.mark.parametrize("k", [WARMUP_BARS, 4000, 10_839, 10_900, 10_960, 10_961, 20_001])
def test_every_feature_is_causal_under_truncation(tmp_path, btc, btc_features, k):
    """Features of the bars up to row k equal the full-series features on rows <= k (k spans the gap)."""
    truncated = compute_features(bars_from(btc.frame.iloc[: k + 1], tmp_path / "prefix.parquet"))
    for name in FEATURE_NAMES:
        np.testing.assert_array_equal(
            truncated[name].to_numpy(),
            btc_features[name].to_numpy()[: k + 1],
            err_msg=f"feature {name} at k={k} looks at the future",
        )


def test_perturbing_the_future_leaves_the_past_unchanged(tmp_path, btc, btc_features):
    k = 15_000
    frame = btc.frame.copy()
    shock = np.random.default_rng(0).uniform(0.5, 2.0, size=len(frame) - k - 1)
    for column in ("open", "high", "low", "close"):
        frame.loc[k + 1 :, column] *= shock
    frame.loc[k + 1 :, "volume"] *= shock[::-1]
    perturbed = compute_features(bars_from(frame, tmp_path / "shocked.parquet"))
    pd.testing.assert_frame_equal(perturbed.iloc[: k + 1], btc_features.iloc[: k + 1])
    assert not perturbed.iloc[k + 2 :].equals(btc_features.iloc[k + 2 :])  # the shock did reach the future


def test_features_ignore_price_and_volume_levels(tmp_path, btc, btc_features):
    """Stationary by construction: the same market at 10x price and 1000x volume has the same features."""
    frame = btc.frame.iloc[:3000].copy()
    frame[["open", "high", "low", "close"]] *= 10.0
    frame["volume"] *= 1000.0
    scaled = compute_features(bars_from(frame, tmp_path / "scaled.parquet"))
    np.testing.assert_allclose(scaled.to_numpy(), btc_features.iloc[:3000].to_numpy(), rtol=1e-6, atol=1e-9)


def test_features_restart_after_a_gap(tmp_path, btc, btc_features):
    """No window spans the gap: the segment after it has the same features as that segment alone."""
    after_gap = btc.segment_ids == 1
    alone = compute_features(bars_from(btc.frame[after_gap], tmp_path / "after.parquet"))
    np.testing.assert_array_equal(alone.to_numpy(), btc_features[after_gap].to_numpy())
    assert np.isnan(btc_features[after_gap].to_numpy()[:WARMUP_BARS]).all()


def test_a_bars_features_are_computed_once_and_matches_the_features(btc, btc_features):
    """What a walk-forward ships with its bars to every fold: compute_features, once per Bars."""
    table = btc.features()
    assert table is btc.features()
    np.testing.assert_array_equal(table, btc_features.to_numpy(dtype=np.float64))
