"""Run freqtrade's own ``backtesting`` command offline (tests only, never the product).

freqtrade 2026.9 loads the exchange's markets over the network at start-up and has no static-markets
option. Here its ``Exchange._api_reload_markets`` is replaced by one that hands ccxt the markets of
a recorded Binance exchangeInfo entry (tests/data), parsed by ccxt's own ``parse_market``; the rest
of freqtrade -- data loading, the strategy, fills, fees, the results file -- runs as shipped.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd

EXCHANGE_INFO = Path(__file__).parent / "data" / "binance_btcusdt_exchangeinfo.json"
PAIRS = {"spot": "BTC/USDT", "futures": "BTC/USDT:USDT"}


def recorded_markets() -> list[dict[str, Any]]:
    """BTC/USDT (spot) and BTC/USDT:USDT (USD-M perpetual) as ccxt parses Binance's exchangeInfo."""
    import ccxt

    raw = json.loads(EXCHANGE_INFO.read_text())
    exchange = ccxt.binance()
    # what ccxt's fetch_markets sets before parsing (margin pair lists load only on request)
    exchange.options["crossMarginPairsData"] = []
    exchange.options["isolatedMarginPairsData"] = []
    return [exchange.parse_market(raw[kind]) for kind in ("spot", "futures")]


def serve_recorded_markets(monkeypatch) -> None:
    """Make every freqtrade Exchange load the recorded markets instead of calling Binance."""
    from freqtrade.exchange import Exchange

    markets = recorded_markets()

    async def reload_markets(self, reload: bool = False) -> None:
        self._api_async.set_markets(markets)

    monkeypatch.setattr(Exchange, "_api_reload_markets", reload_markets)


def write_user_data(root: Path, candles: pd.DataFrame, *, trading_mode: str) -> Path:
    """A freqtrade user_data dir holding ``candles`` (crpbot's columns) as freqtrade's 1m data,
    written by freqtrade's own data handler (futures: the perpetual's candles; without funding-rate
    and mark files freqtrade uses the config's ``futures_funding_rate``, 0 here)."""
    from freqtrade.data.history import get_datahandler
    from freqtrade.enums import CandleType

    user_data = root / "user_data"
    datadir = user_data / "data" / "binance"
    datadir.mkdir(parents=True)
    (user_data / "strategies").mkdir()
    frame = candles.rename(columns={"timestamp": "date"})[["date", "open", "high", "low", "close", "volume"]]
    handler = get_datahandler(datadir, "feather")
    pair = PAIRS[trading_mode]
    candle_type = CandleType.FUTURES if trading_mode == "futures" else CandleType.SPOT
    handler.ohlcv_store(pair, "1m", frame, candle_type)
    return user_data


def freqtrade_candles(user_data: Path, *, trading_mode: str) -> pd.DataFrame:
    """The candles as freqtrade's backtest reads them (its loader, missing minutes filled)."""
    from freqtrade.data.history import load_pair_history
    from freqtrade.enums import CandleType

    candle_type = CandleType.FUTURES if trading_mode == "futures" else CandleType.SPOT
    return load_pair_history(
        pair=PAIRS[trading_mode],
        timeframe="1m",
        datadir=user_data / "data" / "binance",
        fill_up_missing=True,
        data_format="feather",
        candle_type=candle_type,
    )


def backtest_config(
    user_data: Path, *, trading_mode: str, fee: float, crpbot: dict[str, Any], stake: float = 1000.0
) -> dict[str, Any]:
    """A freqtrade config: one pair, one open trade, a fixed stake (no compounding), ``fee`` per side."""
    config: dict[str, Any] = {
        "user_data_dir": str(user_data),
        "datadir": str(user_data / "data" / "binance"),
        "strategy": "CrpbotTest",
        "timeframe": "1m",
        "dry_run": True,
        "dry_run_wallet": 100 * stake,
        "stake_currency": "USDT",
        "stake_amount": stake,
        "max_open_trades": 1,
        "fee": fee,
        "trading_mode": trading_mode,
        "exchange": {"name": "binance", "pair_whitelist": [PAIRS[trading_mode]], "pair_blacklist": []},
        "pairlists": [{"method": "StaticPairList"}],
        # Binance futures quote no tickers: freqtrade's config check wants the order book there
        "entry_pricing": {"price_side": "same", "use_order_book": True, "order_book_top": 1},
        "exit_pricing": {"price_side": "same", "use_order_book": True, "order_book_top": 1},
        "dataformat_ohlcv": "feather",
        "crpbot": crpbot,
    }
    if trading_mode == "futures":
        config.update(margin_mode="isolated", futures_funding_rate=0)
    return config


STRATEGY_FILE = """from crpbot.integrations.freqtrade_strategy import CrpbotStrategy


class CrpbotTest(CrpbotStrategy):
    pass
"""


def run_backtesting(
    monkeypatch, root: Path, config: dict[str, Any], *, timerange: str | None = None
) -> dict[str, Any]:
    """``freqtrade backtesting`` on ``config`` (``--timerange``: freqtrade's, e.g. ``20230401-``);
    returns its stats of the strategy (from its results file)."""
    from freqtrade.main import main

    user_data = Path(config["user_data_dir"])
    (user_data / "strategies" / "crpbot_test.py").write_text(STRATEGY_FILE)
    config_path = root / "config.json"
    config_path.write_text(json.dumps(config))
    results = user_data / "backtest_results"
    serve_recorded_markets(monkeypatch)
    root_logger = logging.getLogger()
    handlers, level = root_logger.handlers[:], root_logger.level
    try:
        argv = ["backtesting", "--config", str(config_path), "--export", "trades", "--cache", "none"]
        main([*argv, *(["--timerange", timerange] if timerange else [])])
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise AssertionError(f"freqtrade backtesting exited with {exc.code}") from exc
    finally:  # freqtrade sets up the root logger for its process; leave the test session's as it was
        root_logger.handlers[:] = handlers
        root_logger.setLevel(level)
    pointer = results / ".last_result.json"
    if not pointer.is_file():  # freqtrade exits 0 after a configuration error
        raise AssertionError("freqtrade backtesting wrote no result: see its log")
    last = json.loads(pointer.read_text())["latest_backtest"]
    with zipfile.ZipFile(results / last) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".json") and "_config" not in n)
        stats = json.loads(archive.read(name))
    return stats["strategy"][config["strategy"]]
