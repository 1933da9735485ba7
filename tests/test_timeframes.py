"""Higher-timeframe features: row t reads the last k-minute bar closed at t (never the forming one),
per gap-free segment; the future never changes the past; live prediction computes them alike;
bad timeframes are one-line errors before Ray. ``crpbot train`` + ``evaluate`` with them: in
tests/test_target_paths.py, with a volatility target (one Ray Train run for both)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from cli_probe import run_commands_in_a_fresh_process
from tiny import TINY_GRU

from crpbot.config import TrainConfig
from crpbot.data.bars import Bars, load_bars
from crpbot.data.features import HISTORY_BARS, WARMUP_BARS, price_volume_features
from crpbot.data.timeframes import (
    TIMEFRAME_FEATURES,
    column_names,
    history_minutes,
    timeframe_features,
    warmup_minutes,
)
from crpbot.errors import CrpbotError
from crpbot.model.predictor import load_predictor
from crpbot.model.serving import LiveModel

MINUTE = pd.Timedelta(minutes=1)
TINY_GBDT_TF = TrainConfig(
    model="gbdt",
    lookback=20,
    horizon=15,
    num_leaves=7,
    min_data_in_leaf=100,
    num_boost_round=40,
    timeframes=[5, 15],
    train_fraction=0.2,
    val_fraction=0.1,
)


def bars_from(frame: pd.DataFrame, path: Path) -> Bars:
    frame.reset_index(drop=True).to_parquet(path)
    return load_bars(path)


def random_walk(stamps: pd.DatetimeIndex, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, len(stamps))))
    open_ = np.r_[close[0], close[:-1]]
    wick = rng.uniform(0, 5e-4, (2, len(stamps)))
    return pd.DataFrame(
        {
            "timestamp": stamps,
            "open": open_,
            "high": np.maximum(open_, close) * (1 + wick[0]),
            "low": np.minimum(open_, close) * (1 - wick[1]),
            "close": close,
            "volume": rng.uniform(1, 10, len(stamps)),
        }
    )


def test_a_row_reads_the_last_closed_bar_of_its_segment_never_the_forming_one(tmp_path):
    """Against an independent resample (pandas, whole clock-aligned 5-minute bars per segment):
    both segments start mid-bar (3 and 4 minutes past a boundary), so each drops a partial bar."""
    n = 5 * (WARMUP_BARS + 40)
    start = pd.Timestamp("2024-01-01 00:03", tz="UTC")
    minutes = np.r_[np.arange(n), np.arange(n) + n + 31]  # a 31-minute gap
    frame = random_walk(start + pd.to_timedelta(minutes, unit="min"))
    bars = bars_from(frame, tmp_path / "walk.parquet")
    got = timeframe_features(bars, [5])
    assert got.shape == (2 * n, len(TIMEFRAME_FEATURES)) and list(column_names([5]))[:2] == [
        "tf5_log_ret_1",
        "tf5_log_ret_5",
    ]

    expected = np.full_like(got, np.nan)
    for segment in (0, 1):
        rows = np.flatnonzero(bars.segment_ids == segment)
        own = frame.iloc[rows].set_index("timestamp")
        resampled = own.resample("5min").agg(
            {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
        )
        whole = resampled[own["close"].resample("5min").count() == 5]
        features = price_volume_features(whole)
        table = np.column_stack([features[name] for name in TIMEFRAME_FEATURES])
        table[:WARMUP_BARS] = np.nan
        closes_at = whole.index + 4 * MINUTE  # the bar's last minute: usable from that row on
        last_closed = np.searchsorted(closes_at, own.index, side="right") - 1
        ok = last_closed >= 0
        expected[rows[ok]] = table[last_closed[ok]]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0, equal_nan=True)
    # warm-up: each segment's first defined row is the one live prediction computes, within the bound
    for segment in (0, 1):
        defined = np.flatnonzero(np.isfinite(got).all(axis=1) & (bars.segment_ids == segment))
        first_row = np.flatnonzero(bars.segment_ids == segment)[0]
        first_minute = frame["timestamp"].iloc[first_row].value // 60_000_000_000
        assert defined[0] - first_row == warmup_minutes([5], first_minute)
        assert defined[0] - first_row <= warmup_minutes([5])


@pytest.fixture(scope="module")
def btc_head(sample_path) -> pd.DataFrame:
    return load_bars(sample_path("BTC")).frame.iloc[:6000].copy()


@pytest.mark.parametrize("k", [3000, 3013, 3014, 3015])  # around a 15-minute bar's close
def test_perturbing_the_future_leaves_the_past_unchanged(tmp_path, btc_head, k):
    base = timeframe_features(bars_from(btc_head, tmp_path / "base.parquet"), [5, 15])
    assert np.isfinite(base[k]).all()
    shocked = btc_head.copy()
    later = shocked.index > k
    shocked.loc[later, ["open", "high", "low", "close"]] *= 1.05
    shocked.loc[later, "volume"] *= 3
    perturbed = timeframe_features(bars_from(shocked, tmp_path / "shocked.parquet"), [5, 15])
    np.testing.assert_array_equal(perturbed[: k + 1], base[: k + 1])
    assert not np.array_equal(perturbed[k + 16 :], base[k + 16 :])  # the shock did reach the future
    truncated = timeframe_features(bars_from(btc_head.iloc[: k + 1], tmp_path / "prefix.parquet"), [5, 15])
    np.testing.assert_array_equal(truncated, base[: k + 1])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([1], "invalid config value timeframes=[1]: each must be whole minutes >= 2"),
        ([2.5], "invalid config value timeframes=[2.5]: expected a list of whole numbers of minutes"),
        ([5, 5], "invalid config value timeframes=[5, 5]: a timeframe is listed twice"),
        ([5, 30], "invalid config value timeframes=[5, 30]: each must be <= lookback 20"),
    ],
)
def test_bad_timeframes_are_one_line_errors(value, message):
    with pytest.raises(CrpbotError) as caught:
        TINY_GRU.replace(timeframes=value)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_a_timeframe_longer_than_the_lookback_fails_the_command_before_ray(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({**TINY_GRU.to_dict(), "timeframes": [60]}))
    command = ["train", "--coin", "BTC", "--config", str(config), "--out", str(tmp_path / "m")]
    (run,) = run_commands_in_a_fresh_process([command], cwd=tmp_path, watched=[tmp_path / "m"])
    assert run.code == 2, run.stderr
    assert run.stderr.count("\n") == 1 and "timeframes=[60]: each must be <= lookback 20" in run.stderr
    assert not run.ray_started and run.existing == []


@pytest.fixture(scope="module")
def tf_model(train_tiny_artifact):
    return train_tiny_artifact(TINY_GBDT_TF, "BTC")


def test_the_artifact_records_the_timeframes_and_the_rows_carry_their_columns(tf_model):
    path, data = tf_model
    config = json.loads((path / "config.json").read_text())
    features = json.loads((path / "features.json").read_text())
    names = list(column_names([5, 15]))
    assert config["train_config"]["timeframes"] == [5, 15] and config["context"]["timeframes"] == [5, 15]
    assert config["feature_names"][-len(names) :] == names == features["names"][-len(names) :]
    assert "tf15_log_ret_1" in names and "tf15_tod_sin" not in names
    # the GBDT's rows read the last bar's higher-timeframe columns (crpbot.data.tabular)
    import lightgbm as lgb

    from crpbot.model.gbdt import GBDT_FILE

    booster = lgb.Booster(model_file=str(path / GBDT_FILE))
    assert booster.feature_name()[39 : 39 + len(names)] == names


def test_predict_on_bars_up_to_t_equals_the_prepared_row_t(tf_model, sample_path):
    """Live features on the trailing slice equal training's from the segment start (both segments),
    and only because the slice holds HISTORY_BARS 15-minute bars: their warm-up is not enough."""
    path, data = tf_model
    bars = load_bars(sample_path("BTC"))
    predictor = load_predictor(path)
    ends = data.window_ends("test", predictor.lookback)
    rows = pd.Index(bars.frame["timestamp"]).get_indexer(pd.to_datetime(data.timestamps[ends], utc=True))
    after_gap = np.flatnonzero(bars.segment_ids[rows] == 1)[:3]
    picks = np.r_[after_gap, np.random.default_rng(0).choice(len(ends), size=12, replace=False)]
    expected = predictor.proba_at(data.features, ends[picks])
    model = LiveModel.load(path)
    assert model.bars_needed() == history_minutes([5, 15]) + 20 == 15 * (HISTORY_BARS + 2) - 2 + 20

    def live(i: int) -> float:
        t = rows[i]
        [prediction] = model.predict(_head(bars, t), now=bars.frame["timestamp"].iloc[t] + MINUTE)
        assert prediction.timestamp.value == data.timestamps[ends[i]]
        return prediction.prob_up

    served = np.array([live(i) for i in picks])
    assert np.abs(served - expected).max() <= 1e-6
    # the trees' inputs themselves: the slice predict featurises gives training's timeframe features
    # (recursive averages over 15-minute bars included); a slice covering only their warm-up
    # defines every feature but not training's values (a tree may not notice; a network would)
    full = timeframe_features(bars, [5, 15])
    t = rows[picks[-1]]
    assert t > 2 * model.bars_needed()
    for history, agrees in ((history_minutes([5, 15]), True), (warmup_minutes([5, 15]), False)):
        sliced = timeframe_features(_head(bars, t).tail(history + 20), [5, 15])
        assert np.allclose(sliced[-1], full[t], rtol=0, atol=1e-9) == agrees


def _head(bars: Bars, t: int) -> Bars:
    """The bars up to and including row t."""
    return dataclasses.replace(bars, frame=bars.frame.iloc[: t + 1], segment_ids=bars.segment_ids[: t + 1])


def test_too_short_a_history_is_refused_naming_the_timeframe_history(tf_model, sample_path):
    model = LiveModel.load(tf_model[0])
    frame = load_bars(sample_path("BTC")).frame
    needed = model.bars_needed()
    tail = frame.iloc[-needed + 1 :]
    history = history_minutes([5, 15])
    with pytest.raises(CrpbotError, match=f"needs {needed:,} \\(feature history {history:,} "):
        model.predict(tail, max_staleness=None)


def test_a_challenger_with_other_timeframes_is_not_compared_with_the_champion(tf_model, train_tiny_artifact):
    from crpbot.evaluation.compare import compare_on_shared_period

    champion, _ = train_tiny_artifact(TINY_GBDT_TF.replace(timeframes=[5]), "BTC")
    refused = compare_on_shared_period(champion, tf_model[0])
    assert not refused.fair
    assert refused.note == "no fair comparison: the champion and the challenger use different features"
