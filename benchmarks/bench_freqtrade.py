"""freqtrade's own backtester against crpbot's, on a model's test period (issue 21 item 2).

Usage: .venv/bin/python benchmarks/bench_freqtrade.py [--config tune_configs/gbdt.yaml] [--coin BTC]

Trains ``--config`` on the coin's bundled sample (no Ray), evaluates it (the threshold τ is chosen on
validation), then backtests the same model over its test period twice: freqtrade 2026.9's
``backtesting`` command with the shipped strategy (futures: long and short; offline, with the test
harness's recorded markets) and ``crpbot.evaluation.backtest.run_backtest`` on the strategy's
P(up) with freqtrade's fills (enter at the next candle's open, exit at the open ``horizon``
candles later, same-side re-entry one candle after a close, 10 bps per side). Prints both
trade counts and net profits per unit stake, and evaluate's own backtest (close fills) beside them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from freqtrade_harness import (  # noqa: E402
    PAIRS,
    backtest_config,
    freqtrade_candles,
    run_backtesting,
    write_user_data,
)

from crpbot.config import load_config  # noqa: E402
from crpbot.data.bars import default_input  # noqa: E402
from crpbot.data.dataset import load_prepared  # noqa: E402
from crpbot.evaluation.backtest import Costs, run_backtest  # noqa: E402
from crpbot.evaluation.evaluate import evaluate_model  # noqa: E402
from crpbot.integrations.candle_signals import candle_ns, load_signal_model  # noqa: E402
from crpbot.model.family import fit_model  # noqa: E402
from crpbot.model.inference import save_model_artifact  # noqa: E402

FEE = 0.001
MODE = "futures"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "tune_configs" / "gbdt.yaml")
    parser.add_argument("--coin", default="BTC")
    args = parser.parse_args()
    config = load_config(args.config)
    sample = default_input(args.coin)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = load_prepared(args.coin, sample, config)
        fit = fit_model(config, data, log=lambda _: None)
        model_dir = save_model_artifact(
            root / "model",
            model_state=fit.best_state,
            config=config,
            data=data,
            history=fit.history,
            best_epoch=fit.best_epoch,
            input_path=sample,
        )
        metrics = evaluate_model(model_dir, out_dir=root / "eval", log=lambda _: None).metrics
        test_start = pd.Timestamp(metrics["test_period"][0])
        user_data = write_user_data(root, pd.read_parquet(sample), trading_mode=MODE)
        ft_config = backtest_config(user_data, trading_mode=MODE, fee=FEE, crpbot={"model": str(model_dir)})
        with pytest.MonkeyPatch.context() as patch:
            stats = run_backtesting(patch, root, ft_config, timerange=f"{int(test_start.timestamp())}-")
        trades = pd.DataFrame(stats["trades"])
        closed = trades[trades["exit_reason"] == "roi"]

        model = load_signal_model({"model": str(model_dir)}, pairs=[PAIRS[MODE]], timeframe="1m")
        frame = freqtrade_candles(user_data, trading_mode=MODE)
        stamps, opens, horizon = candle_ns(frame), frame["open"].to_numpy(), model.horizon
        open_to_open = np.full(len(frame), np.nan)
        open_to_open[:-horizon] = opens[horizon:] / opens[:-horizon] - 1
        start = pd.Timestamp(stats["backtest_start"], tz="UTC").value
        kept = (stamps >= start) & np.isfinite(open_to_open)
        probs, unfamiliar = model.score(frame)
        flagged = f"{int(unfamiliar[kept].sum())} of {int(kept.sum())} candles"
        probs = np.where(unfamiliar, np.nan, probs)[kept]  # the strategy abstains on unfamiliar windows

        def crpbot_backtest(wait: int):
            costs = Costs(fee_bps=FEE * 1e4, entry_delay_bars=1, same_side_reentry_bars=wait)
            return run_backtest(
                stamps[kept],
                probs,
                open_to_open[kept],
                threshold=model.threshold,
                horizon=horizon,
                costs=costs,
            )

        crpbot, no_wait = crpbot_backtest(1), crpbot_backtest(0)
    evaluated = metrics["backtest"]
    print(
        f"model {args.config.name} on {args.coin}: tau {model.threshold} ({model.threshold_source}); "
        f"test period {metrics['test_period'][0]} .. {metrics['test_period'][1]}; "
        f"unfamiliar (no trade): {flagged}"
    )
    print(
        f"freqtrade backtesting: {len(trades)} trades ({len(closed)} closed after the horizon), "
        f"net {trades['profit_ratio'].sum():+.6f} per unit stake ({closed['profit_ratio'].sum():+.6f} closed)"
    )
    print(
        f"crpbot run_backtest, freqtrade's fills: {crpbot.summary['trades']} trades, "
        f"net {crpbot.pnl.sum():+.6f} per unit stake "
        f"(difference {closed['profit_ratio'].sum() - crpbot.pnl.sum():+.2e} on the closed trades)"
    )
    print(f"  without the same-side wait: {no_wait.summary['trades']} trades, net {no_wait.pnl.sum():+.6f}")
    print(
        f"crpbot evaluate (close[t+1] fills, same tau): {evaluated['trades']} trades, "
        f"net {evaluated['total_pnl']:+.6f} per unit stake"
    )


if __name__ == "__main__":
    main()
