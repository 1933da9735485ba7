"""The freqtrade strategy: evaluate's P(up) per candle, refused mismatches, and freqtrade's own
backtester against crpbot's on the same signals (offline: tests/freqtrade_harness.py)."""

from __future__ import annotations

import importlib
import sys
from importlib.util import find_spec

import numpy as np
import pandas as pd
import pytest
from freqtrade_harness import PAIRS, backtest_config, freqtrade_candles, run_backtesting, write_user_data
from tiny import TINY_GRU

from crpbot.config import TrainConfig
from crpbot.errors import CrpbotError
from crpbot.evaluation.backtest import Costs, run_backtest
from crpbot.evaluation.evaluate import evaluate_model
from crpbot.integrations.candle_signals import candle_ns, load_signal_model

needs_freqtrade = pytest.mark.skipif(
    find_spec("freqtrade") is None,
    reason="freqtrade is not installed: pip install 'crpbot[freqtrade]' (make test installs it)",
)
# LightGBM in seconds: few shallow trees on the bundled sample
TINY_GBDT = TrainConfig(
    model="gbdt",
    lookback=20,
    horizon=15,
    num_leaves=7,
    min_data_in_leaf=100,
    num_boost_round=50,
    early_stopping_rounds=10,
    num_threads=1,
    seed=0,
)
FEE = 0.001  # 10 bps per side, crpbot's default cost


@pytest.fixture(scope="module")
def gbdt(train_tiny_artifact):
    return train_tiny_artifact(TINY_GBDT, "BTC")[0]


@pytest.fixture(scope="module")
def gru(train_tiny_artifact):
    return train_tiny_artifact(TINY_GRU, "BTC")[0]


@pytest.fixture(scope="module")
def candles(sample_path) -> pd.DataFrame:
    """The bundled BTC sample as freqtrade hands it to a strategy: a ``date`` column and OHLCV."""
    return pd.read_parquet(sample_path("BTC")).rename(columns={"timestamp": "date"})


@pytest.mark.parametrize("family", ["gbdt", "gru"])
def test_p_up_per_candle_and_threshold_are_evaluates(family, request, candles, tmp_path):
    model_dir = request.getfixturevalue(family)
    evaluated = evaluate_model(model_dir, out_dir=tmp_path / "eval", log=lambda _: None)
    scored = pd.read_parquet(evaluated.out_dir / "predictions.parquet")
    model = load_signal_model({"model": str(model_dir)}, pairs=["BTC/USDT"], timeframe="1m")

    probs, unfamiliar = model.score(candles)

    rows = pd.Index(candles["date"]).get_indexer(scored["timestamp"])
    # the network scores in float32 batches: other batch sizes move the last bit (~6e-8)
    np.testing.assert_allclose(probs[rows], scored["prob_up"], rtol=0, atol=1e-6)
    assert model.abstains
    np.testing.assert_array_equal(~unfamiliar[rows], scored["familiar"])
    assert model.threshold == evaluated.metrics["backtest"]["threshold"]
    assert model.threshold_source == evaluated.metrics["backtest"]["threshold_source"]
    # the last candles, which evaluate cannot label, are scored too: a bot trades on them
    assert np.isfinite(probs[-TINY_GBDT.horizon :]).all()
    assert np.isnan(probs[: model.live.lookback - 1]).all()


def test_the_promoted_model_is_loaded_from_the_registry_or_pulled_from_s3(gbdt, tmp_path, s3_endpoint):
    import boto3

    from crpbot.registry.local import promote
    from crpbot.registry.transfer import push

    bucket = "crpbot-freqtrade-test"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    origin, clone = tmp_path / "origin", tmp_path / "clone"
    promote(gbdt, "BTC", root=origin, version="v1")
    push(origin, bucket, endpoint_url=s3_endpoint)
    pairs = ["BTC/USDT:USDT"]

    local = load_signal_model({"registry": str(origin)}, pairs=pairs, timeframe="1m")
    remote = {"registry": str(clone), "bucket": bucket, "endpoint_url": s3_endpoint}
    pulled = load_signal_model(remote, pairs=pairs, timeframe="1m")

    assert local.live.version == pulled.live.version == "v1"
    assert str(pulled.live.predictor.path).startswith(str(clone))
    assert local.threshold == pulled.threshold


@pytest.mark.parametrize(
    ("settings", "pairs", "timeframe", "message"),
    [
        ({}, ["ETH/USDT"], "1m", "trained for BTC-USD, not ETH-USD"),
        ({}, ["BTC/USDT"], "5m", "crpbot models read 1m candles; the strategy's timeframe is 5m"),
        ({}, ["BTC/USDT", "ETH/USDT"], "1m", "one model trades one coin"),
        ({"threshold": 0.4}, ["BTC/USDT"], "1m", "invalid crpbot threshold 0.4"),
        ({"bucket": "b", "model": "x"}, ["BTC/USDT"], "1m", "excludes registry and bucket"),
        ({"tau": 0.6}, ["BTC/USDT"], "1m", "unknown crpbot setting tau"),
    ],
)
def test_a_model_for_other_candles_is_refused_in_one_line(gbdt, settings, pairs, timeframe, message):
    settings = {"model": str(gbdt), **settings}
    with pytest.raises(CrpbotError, match=message) as caught:
        load_signal_model(settings, pairs=pairs, timeframe=timeframe)
    assert "\n" not in str(caught.value)


def test_without_freqtrade_the_strategy_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "freqtrade.strategy", None)  # import fails as if not installed
    monkeypatch.delitem(sys.modules, "crpbot.integrations.freqtrade_strategy", raising=False)
    with pytest.raises(CrpbotError, match=r"pip install 'crpbot\[freqtrade\]'"):
        importlib.import_module("crpbot.integrations.freqtrade_strategy")


@needs_freqtrade
def test_the_strategy_refuses_at_start_up_and_goes_long_only_on_spot(gbdt, candles):
    from freqtrade.exceptions import OperationalException

    from crpbot.integrations.freqtrade_strategy import PROB_COLUMN, UNFAMILIAR_COLUMN, CrpbotStrategy

    def config(pair: str, trading_mode: str = "spot") -> dict:
        return {
            "crpbot": {"model": str(gbdt), "threshold": 0.5},
            "timeframe": "1m",
            "trading_mode": trading_mode,
            "exchange": {"name": "binance", "pair_whitelist": [pair]},
        }

    with pytest.raises(OperationalException, match="^crpbot: model .* trained for BTC-USD, not ETH-USD$"):
        CrpbotStrategy(config("ETH/USDT"))
    spot = CrpbotStrategy(config("BTC/USDT"))
    assert spot.minimal_roi == {"15": -1} and not spot.can_short
    candles = candles.iloc[:3000].copy()  # a day and more than the startup candles
    assert spot.startup_candle_count < 3000
    frame = spot.populate_entry_trend(spot.populate_indicators(candles.copy(), {}), {})
    unfamiliar = frame[UNFAMILIAR_COLUMN]
    assert unfamiliar.sum() > 0  # windows outside training's features: never traded
    assert "enter_short" not in frame
    longs = (frame[PROB_COLUMN] >= 0.5) & ~unfamiliar
    assert (frame["enter_long"] == longs).all() and frame["enter_long"].sum() > 100
    futures = CrpbotStrategy(config("BTC/USDT:USDT", "futures"))
    frame = futures.populate_entry_trend(futures.populate_indicators(candles.copy(), {}), {})
    assert futures.can_short and (frame["enter_short"] == ((frame[PROB_COLUMN] < 0.5) & ~unfamiliar)).all()
    assert frame["enter_short"].sum() > 100


@needs_freqtrade
def test_freqtrade_backtest_matches_crpbot_backtest_of_the_same_signals(
    gbdt, sample_path, tmp_path, monkeypatch
):
    """freqtrade's ``backtesting`` (futures: longs and shorts) against ``run_backtest`` on the
    strategy's own P(up) with freqtrade's fills: enter at the next candle's open, exit at the open
    ``horizon`` candles later, the same fee; same trades, same net profit within the fee's rounding."""
    mode = "futures"
    user_data = write_user_data(tmp_path, pd.read_parquet(sample_path("BTC")), trading_mode=mode)
    config = backtest_config(user_data, trading_mode=mode, fee=FEE, crpbot={"model": str(gbdt)})

    stats = run_backtesting(monkeypatch, tmp_path, config)

    trades = pd.DataFrame(stats["trades"])
    model = load_signal_model({"model": str(gbdt)}, pairs=[PAIRS[mode]], timeframe="1m")
    frame = freqtrade_candles(user_data, trading_mode=mode)  # the candles freqtrade traded
    stamps, opens, horizon = candle_ns(frame), frame["open"].to_numpy(), model.horizon
    open_to_open = np.full(len(frame), np.nan)
    open_to_open[:-horizon] = opens[horizon:] / opens[:-horizon] - 1
    kept = (stamps >= pd.Timestamp(stats["backtest_start"], tz="UTC").value) & np.isfinite(open_to_open)
    probs, unfamiliar = model.score(frame)
    assert unfamiliar[kept].sum() > 0
    probs[unfamiliar] = np.nan  # the strategy abstains there: no signal for crpbot's backtest either
    crpbot = run_backtest(
        stamps[kept],
        probs[kept],
        open_to_open[kept],
        threshold=model.threshold,
        horizon=horizon,
        costs=Costs(fee_bps=FEE * 1e4, entry_delay_bars=1, same_side_reentry_bars=1),
    )

    closed = trades[trades["exit_reason"] == "roi"]  # the rest: still open at the end, force-exited
    assert len(trades) - len(closed) <= 1
    assert len(closed) == crpbot.summary["trades"] > 50
    assert (closed["open_timestamp"].to_numpy() * 1_000_000 == crpbot.entry_times).all()
    assert (np.where(closed["is_short"], -1, 1) == crpbot.sides).all()
    signal_rows = np.searchsorted(stamps, trades["open_timestamp"].to_numpy() * 1_000_000) - 1
    assert not unfamiliar[signal_rows].any()  # freqtrade entered on no flagged candle
    # freqtrade charges the fee on each side's value (profit ratio = exit value after fee / entry value
    # with fee - 1), crpbot subtracts 2 x fee from the gross return: per trade they differ by
    # 2·fee·(fee ∓ gross)/(1 ± fee), at most 2·fee·(|gross| + fee)/(1 - fee); freqtrade also rounds
    # the exit price to the market's tick (0.10 USDT, < 2e-6 of a BTC price)
    gross = crpbot.pnl + 2 * FEE
    np.testing.assert_allclose(closed["profit_ratio"], fee_on_value(gross, crpbot.sides), rtol=0, atol=4e-6)
    net_gap = closed["profit_ratio"].sum() - crpbot.pnl.sum()
    assert abs(net_gap) <= (2 * FEE * (np.abs(gross) + FEE) / (1 - FEE) + 4e-6).sum()


def fee_on_value(gross: np.ndarray, sides: np.ndarray) -> np.ndarray:
    """freqtrade's profit ratio of a trade whose price moved ``gross`` in its favour, at ``FEE`` per side."""
    long = (1 + gross) * (1 - FEE) / (1 + FEE) - 1
    short = 1 - (1 - gross) * (1 + FEE) / (1 - FEE)
    return np.where(sides == 1, long, short)
