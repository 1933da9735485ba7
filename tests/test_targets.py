"""Targets (crpbot.data.targets): hand-built bars with known answers, perturb-the-future, the
default labels bit-identical to the code before targets existed, and the config's refusals."""

import numpy as np
import pytest

from crpbot.config import TrainConfig
from crpbot.data.bars import default_input, load_bars, timestamps_ns
from crpbot.data.dataset import usable_rows
from crpbot.data.targets import (
    Target,
    compute_labels,
    forward_returns,
    past_moves,
    rolling_sigma,
    trailing_median_abs_move,
)
from crpbot.errors import CrpbotError

A = 0.01  # log step of the hand-built triple-barrier series
WICK = 1e-6  # highs and lows a hair beyond the close, so touches are not float ties


def _bars(close, high=None, low=None) -> dict[str, np.ndarray]:
    close = np.asarray(close, dtype=np.float64)
    return {
        "close": close,
        "high": close if high is None else np.asarray(high, dtype=np.float64),
        "low": close if low is None else np.asarray(low, dtype=np.float64),
    }


def _labels(target: Target, bars: dict[str, np.ndarray], segments=None) -> np.ndarray:
    segments = np.zeros(len(bars["close"]), dtype=np.int32) if segments is None else np.asarray(segments)
    return compute_labels(target, bars, segments)[0]


def test_direction_labels_ties_and_segment_ends():
    close = [1.0, 2.0, 2.0, 1.0, 3.0]
    labels, forward = compute_labels(Target(horizon=1), _bars(close), np.array([0, 0, 0, 1, 1]))
    np.testing.assert_array_equal(labels, [1, np.nan, np.nan, 1, np.nan])  # tie; t+1 in another segment
    np.testing.assert_allclose(forward, [1.0, 0.0, np.nan, 2.0, np.nan])


def test_net_direction_labels_only_moves_beyond_min_move():
    close = [100.0, 100.1, 100.5, 100.2]  # +10 bps, +39.96 bps, -29.85 bps
    labels = _labels(Target("net_direction", horizon=1, min_move_bps=20.0), _bars(close))
    np.testing.assert_array_equal(labels, [np.nan, 1, 0, np.nan])


def test_volatility_labels_against_the_trailing_median_of_finished_moves():
    close = [100.0, 101.0, 101.0, 103.0, 103.0, 103.1]
    labels = _labels(Target("volatility", horizon=1, vol_window=2), _bars(close))
    # t=2: |+1.98%| > median(|+1%|, 0) = 0.5%; t=3: 0 > 0.99%? no; t=4: 0.097% > 0.99%? no
    np.testing.assert_array_equal(labels, [np.nan, np.nan, 1, 0, 0, np.nan])


def _barrier_series(**changes: tuple[float, float]) -> dict[str, np.ndarray]:
    """log close 0, A, 0, A, 0, A, 0, 0, 0: sigma over 2 returns is sqrt(2) A at t = 2..6, so with
    barrier_k 0.5 and horizon 2 the barriers sit exactly one step A from the close."""
    x = np.array([0, A, 0, A, 0, A, 0, 0, 0])
    high, low = x + WICK, x - WICK
    for bar, (hi, lo) in changes.items():
        high[int(bar[1:])], low[int(bar[1:])] = hi, lo
    return _bars(np.exp(x), np.exp(high), np.exp(low))


TRIPLE = Target("triple_barrier", horizon=2, barrier_k=0.5, sigma_window=2)


def test_triple_barrier_first_touch_and_neither():
    labels = _labels(TRIPLE, _barrier_series())
    # up first at t=2 and 4, down first at t=3 and 5; t=6: bars 7 and 8 stay inside -> undefined
    np.testing.assert_array_equal(labels, [np.nan, np.nan, 1, 0, 1, 0, np.nan, np.nan, np.nan])


def test_triple_barrier_touch_at_the_vertical_barrier_counts():
    labels = _labels(TRIPLE, _barrier_series(b8=(1.5 * A, -WICK)))
    assert labels[6] == 1.0  # bar 8 (t + h) reaches the upper barrier


def test_triple_barrier_both_barriers_in_one_bar_is_undefined():
    labels = _labels(TRIPLE, _barrier_series(b7=(2 * A, -2 * A), b8=(1.5 * A, -WICK)))
    assert np.isnan(labels[6])  # bar 7 crosses both: which came first is unknowable
    assert labels[5] == 0.0  # decided at bar 6 already


def test_triple_barrier_without_sigma_history_is_undefined():
    labels = _labels(Target("triple_barrier", horizon=2, barrier_k=0.5, sigma_window=4), _barrier_series())
    assert np.isnan(labels[:4]).all()  # sigma needs 4 returns: rows 0..3 have fewer


def _random_bars(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    wick = np.abs(rng.normal(0, 5e-4, (2, n)))
    return _bars(close, close * np.exp(wick[0]), close * np.exp(-wick[1]))


ALL_TARGETS = [
    Target(horizon=7),
    Target("triple_barrier", horizon=7, barrier_k=1.0, sigma_window=20),
    Target("net_direction", horizon=7, min_move_bps=5.0),
    Target("volatility", horizon=7, vol_window=30),
]


@pytest.mark.parametrize("target", ALL_TARGETS, ids=lambda target: target.name)
def test_bars_after_t_plus_horizon_do_not_change_the_label_at_t(target):
    n, t = 400, 200
    bars = _random_bars(n, 1)
    segments = np.repeat([0, 1], [250, 150]).astype(np.int32)
    before = _labels(target, bars, segments)
    changed = {name: values.copy() for name, values in bars.items()}
    for name in changed:
        changed[name][t + target.horizon + 1 :] *= 1.05
    after = _labels(target, changed, segments)
    np.testing.assert_array_equal(before[: t + 1], after[: t + 1])
    assert np.isfinite(before[100 : t + 1]).any()


def test_sigma_and_median_at_t_read_bars_up_to_t_only():
    n, t, h = 400, 200, 5
    close = _random_bars(n, 2)["close"]
    segments = np.zeros(n, dtype=np.int32)
    changed = close.copy()
    changed[t + 1 :] *= np.exp(np.random.default_rng(3).normal(0, 1e-2, n - t - 1))
    for values in (close, changed):
        assert np.isfinite(rolling_sigma(values, segments, 20)[t])
    np.testing.assert_array_equal(
        rolling_sigma(close, segments, 20)[: t + 1], rolling_sigma(changed, segments, 20)[: t + 1]
    )

    def median(values):
        return trailing_median_abs_move(past_moves(forward_returns(values, segments, h), segments, h), 30)

    np.testing.assert_array_equal(median(close)[: t + 1], median(changed)[: t + 1])


def test_rolling_statistics_restart_after_a_gap():
    close = _random_bars(60, 4)["close"]
    segments = np.repeat([0, 1], [30, 30]).astype(np.int32)
    sigma = rolling_sigma(close, segments, 5)
    assert np.isnan(sigma[30:35]).all() and np.isfinite(sigma[35])  # 5 returns of segment 1 first
    median = trailing_median_abs_move(past_moves(forward_returns(close, segments, 3), segments, 3), 4)
    assert np.isnan(median[30:36]).all() and np.isfinite(median[36])  # 3 rows without a past move


def _labels_before_targets(bars, rows_kept, segment_ids, horizon):
    """The label code as it was before targets (crpbot.data.dataset.usable_rows at 667c04a)."""
    close = bars.frame["close"].to_numpy()[rows_kept]
    labels = np.full(len(rows_kept), np.nan, dtype=np.float32)
    forward = np.full(len(rows_kept), np.nan, dtype=np.float64)
    inside = np.flatnonzero(segment_ids[:-horizon] == segment_ids[horizon:])
    forward[inside] = close[inside + horizon] / close[inside] - 1
    later, now = close[inside + horizon], close[inside]
    labels[inside] = np.where(later > now, 1.0, np.where(later < now, 0.0, np.nan)).astype(np.float32)
    return labels, forward


def test_default_config_labels_are_bit_identical_to_before():
    bars = load_bars(default_input("BTC"))
    config = TrainConfig()
    rows = usable_rows(bars, Target.from_config(config))
    kept = np.flatnonzero(np.isin(timestamps_ns(bars.frame["timestamp"]), rows["timestamps"]))
    labels, forward = _labels_before_targets(bars, kept, rows["segment_ids"], config.horizon)
    assert labels.dtype == rows["labels"].dtype
    np.testing.assert_array_equal(labels, rows["labels"])
    np.testing.assert_array_equal(forward, rows["forward_returns"])


def test_target_from_config_fills_its_own_defaults_only():
    target = Target.from_config(TrainConfig(target="triple_barrier", horizon=30, barrier_k=2.0))
    assert target.to_dict() == {"name": "triple_barrier", "horizon": 30, "barrier_k": 2.0, "sigma_window": 60}
    assert Target.from_config(TrainConfig()).to_dict() == {"name": "direction", "horizon": 15}
    assert Target.from_config(TrainConfig(target="net_direction")).min_move_bps == 20.0
    assert not Target.from_config(TrainConfig(target="volatility")).directional


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"target": "returns"}, "target"),
        ({"horizon": 0}, "horizon"),
        ({"target": "triple_barrier", "barrier_k": 0.0}, "barrier_k"),
        ({"target": "triple_barrier", "barrier_k": -1.0}, "barrier_k"),
        ({"barrier_k": 1.0}, "barrier_k"),  # a triple_barrier key on direction
        ({"target": "volatility", "min_move_bps": 5.0}, "min_move_bps"),
        ({"target": "net_direction", "vol_window": 100}, "vol_window"),
        ({"target": "volatility", "vol_window": 0}, "vol_window"),
        ({"target": "triple_barrier", "sigma_window": 1}, "sigma_window"),
        ({"target": "net_direction", "min_move_bps": -1.0}, "min_move_bps"),
    ],
)
def test_bad_target_keys_are_one_line_errors_naming_the_key(changes, key):
    with pytest.raises(CrpbotError, match=f"invalid config value {key}=") as error:
        TrainConfig(**changes)
    assert "\n" not in str(error.value)


def test_the_default_min_move_is_the_backtests_default_round_trip():
    from crpbot.data.targets import DEFAULT_MIN_MOVE_BPS
    from crpbot.evaluation.backtest import DEFAULT_FEE_BPS, DEFAULT_SLIPPAGE_BPS

    assert DEFAULT_MIN_MOVE_BPS == 2 * (DEFAULT_FEE_BPS + DEFAULT_SLIPPAGE_BPS)
