"""Labels, purged splits and the train-only scaler on the real sample."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crpbot.config import TrainConfig
from crpbot.data.bars import Bars, load_bars, timestamps_ns
from crpbot.data.dataset import PreparedData, load_prepared, prepare_data, prepare_inference
from crpbot.data.features import FEATURE_NAMES, compute_features
from crpbot.data.scaler import Scaler
from crpbot.errors import CrpbotError

LOOKBACK, HORIZON = 60, 15


@pytest.fixture(scope="module")
def btc(sample_path) -> Bars:
    return load_bars(sample_path("BTC"))


@pytest.fixture(scope="module")
def prepared(btc) -> PreparedData:
    return prepare_data(btc, lookback=LOOKBACK, horizon=HORIZON)


def test_contract_types_and_shapes(prepared):
    n = len(prepared)
    assert prepared.features.dtype == np.float32 and prepared.features.shape == (n, len(FEATURE_NAMES))
    assert prepared.features.flags["C_CONTIGUOUS"] and np.isfinite(prepared.features).all()
    assert prepared.labels.dtype == np.float32 and prepared.forward_returns.dtype == np.float64
    assert prepared.segment_ids.dtype == np.int32 and prepared.timestamps.dtype == np.int64
    assert np.all(np.diff(prepared.timestamps) > 0)
    assert prepared.feature_names == FEATURE_NAMES and prepared.purge == LOOKBACK + HORIZON
    assert prepared.coin == "BTC-USD" and len(prepared.fingerprint) == 64


def test_labels_are_close_h_minutes_later_above_close_now(btc, prepared):
    close = btc.frame.set_index(timestamps_ns(btc.frame["timestamp"]))["close"]
    later = close.reindex(prepared.timestamps + HORIZON * 60_000_000_000).to_numpy()
    now = close.reindex(prepared.timestamps).to_numpy()
    reachable = ~np.isnan(later)  # t+h is a bar of the same segment (no gap, no end of data)
    tie = reachable & (later == now)
    moved = reachable & ~tie
    assert tie.any()  # the BTC sample has a few flat 15-minute outcomes
    # labelled exactly where the price moved; a tie is neither up nor down: unlabelled
    assert np.array_equal(~np.isnan(prepared.labels), moved)
    assert np.array_equal(prepared.labels[moved], (later > now)[moved].astype(np.float32))
    # returns are defined wherever t+h is reachable, ties included (0.0: zero PnL, finite)
    assert np.array_equal(~np.isnan(prepared.forward_returns), reachable)
    np.testing.assert_allclose(prepared.forward_returns[reachable], (later / now - 1)[reachable])
    assert np.all(prepared.forward_returns[tie] == 0.0)
    for split in prepared.split_bounds:
        assert not np.isin(np.flatnonzero(tie), prepared.window_ends(split, LOOKBACK)).any()
    assert 0.4 < np.nanmean(prepared.labels) < 0.6


def test_no_window_end_is_a_tie_on_the_sol_sample(sample_path):
    """SOL's sample has many flat 15-minute outcomes (~6-9% of rows); none is served as "down"."""
    sol = load_bars(sample_path("SOL"))
    data = prepare_data(sol, lookback=LOOKBACK, horizon=HORIZON)
    close = sol.frame.set_index(timestamps_ns(sol.frame["timestamp"]))["close"]
    for split in ("train", "val", "test"):
        ends = data.window_ends(split, LOOKBACK)
        now = close.reindex(data.timestamps[ends]).to_numpy()
        later = close.reindex(data.timestamps[ends] + HORIZON * 60_000_000_000).to_numpy()
        assert not np.any(later == now), split
        assert np.all(data.forward_returns[ends] != 0.0) and np.isin(data.labels[ends], (0.0, 1.0)).all()
        start, end = data.split_bounds[split]
        rows = np.arange(start, end - HORIZON)
        ties = rows[data.forward_returns[rows] == 0.0]
        assert len(ties) > 0.04 * len(rows), split  # the ties exist, they are just not served
        assert np.isnan(data.labels[ties]).all()
        # ...except to a backtest, which trades them (a flat move still pays the round trip)
        traded = data.window_ends(split, LOOKBACK, labelled=False)
        assert set(ends) < set(traded)
        assert np.all(data.forward_returns[np.setdiff1d(traded, ends)] == 0.0)


@pytest.mark.parametrize("lookback", [1, 16, LOOKBACK, 240])
def test_no_window_or_label_of_one_split_touches_the_next(prepared, lookback):
    bounds = prepared.split_bounds
    assert bounds["train"][0] == 0 and bounds["test"][1] == len(prepared)
    reach = {}
    for split, (start, end) in bounds.items():
        ends = prepared.window_ends(split, lookback)
        assert len(ends) > 0 and ends.dtype == np.int64
        first_row, label_row = ends - lookback + 1, ends + HORIZON
        assert first_row.min() >= start and label_row.max() < end
        assert np.all(prepared.segment_ids[first_row] == prepared.segment_ids[label_row])
        assert not np.isnan(prepared.labels[ends]).any()
        reach[split] = (first_row.min(), label_row.max())
    for before, after in (("train", "val"), ("val", "test")):
        assert bounds[after][0] - bounds[before][1] >= prepared.purge
        # in time, too: the last label bar of one split precedes the first window bar of the next
        assert prepared.timestamps[reach[before][1]] < prepared.timestamps[reach[after][0]]


def test_windows_across_the_gap_are_excluded(btc, prepared):
    gap_end = int(np.searchsorted(prepared.timestamps, btc.report.gaps[0][1].value))
    ends = prepared.window_ends("train", LOOKBACK)
    crossing = (ends - LOOKBACK + 1 < gap_end) & (ends + HORIZON >= gap_end)
    assert gap_end < prepared.split_bounds["train"][1] and not crossing.any()
    # the windows right beside the gap stay, except ties: the price was frozen before the halt,
    # so the last 15-minute outcomes before it are flat and unlabelled
    last_before = gap_end - HORIZON - 1
    labelled_before = np.flatnonzero(~np.isnan(prepared.labels[: last_before + 1]))[-1]
    assert np.all(prepared.forward_returns[labelled_before + 1 : last_before + 1] == 0.0)
    assert np.isin([labelled_before, gap_end + LOOKBACK - 1], ends).all()


def test_scaler_statistics_come_from_train_rows_only(tmp_path, btc, prepared):
    raw = compute_features(btc).dropna().to_numpy()
    start, end = prepared.split_bounds["train"]
    np.testing.assert_allclose(prepared.scaler.mean_, raw[start:end].mean(axis=0))
    np.testing.assert_allclose(prepared.scaler.scale_, raw[start:end].std(axis=0))
    # changing every bar after the training period leaves the scaler exactly as it was
    frame = btc.frame.copy()
    after_train = frame["timestamp"] > pd.Timestamp(int(prepared.timestamps[end - 1]), tz="UTC")
    frame.loc[after_train, ["open", "high", "low", "close"]] *= 3.0
    frame.loc[after_train, "volume"] *= 0.01
    frame.to_parquet(tmp_path / "changed.parquet")
    changed = prepare_data(load_bars(tmp_path / "changed.parquet"), lookback=LOOKBACK, horizon=HORIZON)
    assert changed.split_bounds == prepared.split_bounds
    np.testing.assert_array_equal(changed.scaler.mean_, prepared.scaler.mean_)
    np.testing.assert_array_equal(changed.scaler.scale_, prepared.scaler.scale_)
    train_rows = prepared.features[start:end]
    assert np.abs(train_rows.mean(axis=0)).max() < 1e-3


def test_saved_split_times_and_scaler_reproduce_the_split(btc, prepared):
    saved_scaler = Scaler.from_dict(prepared.scaler.to_dict())
    again = prepare_data(
        btc,
        lookback=LOOKBACK,
        horizon=HORIZON,
        train_fraction=0.5,
        val_fraction=0.3,
        split_times=prepared.split_times(),
        scaler=saved_scaler,
    )
    assert again.split_bounds == prepared.split_bounds and again.scaler is saved_scaler
    np.testing.assert_array_equal(again.features, prepared.features)


def test_prepare_inference_scores_everything_with_the_saved_scaler(btc, prepared):
    inference = prepare_inference(btc, scaler=prepared.scaler, horizon=HORIZON)
    assert inference.split_bounds == {"test": (0, len(prepared))}
    np.testing.assert_array_equal(inference.features, prepared.features)
    assert len(inference.window_ends("test", LOOKBACK)) > len(prepared.window_ends("test", LOOKBACK))
    with pytest.raises(CrpbotError, match="no 'train' split"):
        inference.window_ends("train", LOOKBACK)


def test_load_prepared_uses_the_config_and_the_bundled_sample():
    config = TrainConfig(lookback=30, horizon=5, train_fraction=0.6, val_fraction=0.2)
    data = load_prepared("eth", None, config)
    assert data.coin == "ETH-USD" and data.horizon == 5 and data.purge == 35
    (_, train_end), (val_start, _) = data.split_bounds["train"], data.split_bounds["val"]
    assert abs(train_end / (len(data) - 70) - 0.6) < 0.001 and val_start - train_end == 35


def test_too_little_data_says_how_many_rows_are_needed(tmp_path, btc):
    btc.frame.iloc[:700].to_parquet(tmp_path / "short.parquet")
    with pytest.raises(CrpbotError, match=r"too little data: 580 usable rows after warm-up, about \d+"):
        prepare_data(load_bars(tmp_path / "short.parquet"), lookback=LOOKBACK, horizon=HORIZON)


def test_warm_up_longer_than_the_data_is_a_clear_error(tmp_path, btc):
    btc.frame.iloc[:100].to_parquet(tmp_path / "tiny.parquet")
    with pytest.raises(CrpbotError, match="no row has all features defined: .*120-bar warm-up"):
        prepare_data(load_bars(tmp_path / "tiny.parquet"), lookback=LOOKBACK, horizon=HORIZON)


def test_all_ties_say_so_instead_of_asking_for_more_data(tmp_path, btc):
    btc.frame.assign(open=100.0, high=100.0, low=100.0, close=100.0).to_parquet(tmp_path / "flat.parquet")
    with pytest.raises(CrpbotError, match=r"the train split .* every outcome is a tie") as caught:
        prepare_data(load_bars(tmp_path / "flat.parquet"), lookback=LOOKBACK, horizon=HORIZON)
    assert "more data" not in str(caught.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lookback": 0, "horizon": 15}, "lookback and horizon must be >= 1"),
        (
            {"lookback": 60, "horizon": 15, "train_fraction": 0.9, "val_fraction": 0.1},
            "invalid split fractions",
        ),
        ({"lookback": 60, "horizon": 15, "split_times": {"train": (0, 1)}}, "split_times lacks val, test"),
    ],
)
def test_invalid_arguments_fail_clearly(btc, kwargs, message):
    with pytest.raises(CrpbotError, match=message):
        prepare_data(btc, **kwargs)


def test_scaler_record_is_validated():
    with pytest.raises(CrpbotError, match="non-positive scale"):
        Scaler.from_dict({"mean": [0.0, 1.0], "scale": [1.0, 0.0]})
    with pytest.raises(CrpbotError, match="invalid scaler record"):
        Scaler.from_dict({"mean": [0.0]})
