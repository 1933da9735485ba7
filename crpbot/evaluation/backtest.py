"""A deliberately plain backtest of the direction signal, costs included.

Long when P(up) >= tau, short when P(up) <= 1 - tau, flat otherwise. A position is
held for exactly ``horizon`` minutes (the label's horizon, so the realised return is
the row's forward return) and no new position opens before it is closed. PnL is the
return on one unit of notional per trade, summed (no compounding, no leverage), minus
``fee_bps + slippage_bps`` on each side.

Entry is ``entry_delay_bars`` bars after the signal's bar t (default 1): at close[t+1], the
first price a real account can trade on once bar t has closed and the model has run, and the
position is held ``horizon`` minutes from there (its return is row t+1's forward return). A
signal whose entry bar is not among the rows (past the end, or in a gap) is not traded.
``entry_delay_bars=0`` enters at close[t], the last bar the model saw, with no latency -- the
recipe's backtest, which credits the model with moves no order could have caught.
``same_side_reentry_bars`` (default 0) makes a new position on the side of the one just closed wait
that many bars after the close (a reversal still opens at the close): freqtrade's backtester waits
1, since it processes a candle's entries before its exits (``crpbot.integrations``, RESULTS.md).
``slippage_bps`` is the allowance for the fill price itself. ``win_rate`` is after costs
(the net PnL of the trade > 0); ``gross_win_rate`` is the share of trades whose direction was
right before costs (side * forward return > 0; a flat move is not a win), and
``breakeven_move_bps`` the round-trip cost a move must exceed to win after costs -- with
10 bps per side most 15-minute moves are smaller than that, so ``win_rate`` is far below
the directional accuracy. ``max_drawdown`` is measured on the closed-trade equity curve
(cumulative net PnL after each trade), not on intra-trade marks.

Sharpe and exposure are per minute *with data*: the minutes covered are the union of each row's
``[t, t + horizon)``, i.e. per gap-free run of rows (1-minute bars) the run's rows plus the
``horizon - 1`` minutes its last label reaches beyond them (a gap shorter than the horizon is covered
by the label before it). A months-long gap between two
stretches of bars is not trading time, so it neither dilutes the exposure nor the trades per year.
The same rows with the gap closed to the tail (the second stretch starting ``horizon`` minutes after
the first one's last row) give the same Sharpe and exposure.

:func:`net_return_per_trade` is what the gate reads: the mean net return per trade with its 95% CI
(``crpbot.evaluation.metrics.mean_interval``; trades never overlap, so the dependence spans one trade)
and the number of trades.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from crpbot.errors import CrpbotError
from crpbot.evaluation.metrics import mean_interval

MINUTE_NS = 60 * 1_000_000_000
MINUTES_PER_YEAR = 365.25 * 24 * 60
DEFAULT_ENTRY_DELAY_BARS = 1
DEFAULT_FEE_BPS = 10.0
DEFAULT_SLIPPAGE_BPS = 0.0
TRADES_FILE = "trades.parquet"  # an evaluation's trades: entry_time, side, net_return


@dataclass(frozen=True)
class Costs:
    """How the backtest fills: fee and slippage per side (bps), the bars between signal and entry, and
    the bars a same-side position waits after the previous one closed."""

    fee_bps: float = DEFAULT_FEE_BPS
    slippage_bps: float = DEFAULT_SLIPPAGE_BPS
    entry_delay_bars: int = DEFAULT_ENTRY_DELAY_BARS
    same_side_reentry_bars: int = 0

    def __post_init__(self) -> None:
        for name, bps in (("fee", self.fee_bps), ("slippage", self.slippage_bps)):
            number = isinstance(bps, (int, float)) and not isinstance(bps, bool)
            if not (number and math.isfinite(bps) and bps >= 0):
                raise CrpbotError(f"invalid {name} {bps} bps: must be a finite number >= 0")
        for name, bars in (
            ("entry delay", self.entry_delay_bars),
            ("same-side re-entry", self.same_side_reentry_bars),
        ):
            if isinstance(bars, bool) or not isinstance(bars, int) or bars < 0:
                raise CrpbotError(f"invalid {name} {bars!r} bars: must be an integer >= 0")

    @property
    def per_side_bps(self) -> float:
        return float(self.fee_bps + self.slippage_bps)


@dataclass(frozen=True)
class BacktestResult:
    """Per-trade record plus the summary that goes into metrics.json."""

    entry_times: np.ndarray  # int64 ns
    sides: np.ndarray  # +1 long, -1 short
    pnl: np.ndarray  # net return per trade
    summary: dict[str, float | int | None]

    @property
    def equity(self) -> np.ndarray:
        """Cumulative net PnL after each trade."""
        return np.cumsum(self.pnl)


def max_drawdown(pnl: np.ndarray) -> float:
    """Largest fall of the cumulative PnL from its running peak (the start, 0, counts as a peak)."""
    equity = np.concatenate([[0.0], np.cumsum(np.asarray(pnl, dtype=np.float64))])
    return float(np.max(np.maximum.accumulate(equity) - equity))


def run_backtest(
    timestamps: np.ndarray,
    probs: np.ndarray,
    forward_returns: np.ndarray,
    *,
    threshold: float,
    horizon: int,
    costs: Costs = Costs(),
) -> BacktestResult:
    """Trade the rows in time order; see the module docstring for the rules."""
    timestamps = np.asarray(timestamps, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    forward_returns = np.asarray(forward_returns, dtype=np.float64)
    if not (len(timestamps) == len(probs) == len(forward_returns)):
        raise CrpbotError("backtest: timestamps, probabilities and returns must have equal length")
    if len(probs) == 0:
        raise CrpbotError("backtest: no rows")
    if not 0.5 <= threshold <= 1.0:
        raise CrpbotError(f"backtest threshold must be in [0.5, 1], got {threshold}")
    if horizon < 1:
        raise CrpbotError(f"backtest horizon must be >= 1 minute, got {horizon}")
    if np.any(np.diff(timestamps) <= 0):
        raise CrpbotError("backtest: timestamps must be strictly increasing")
    if not np.all(np.isfinite(forward_returns)):
        raise CrpbotError("backtest: forward returns must be finite (labelled rows only)")

    signal = np.where(probs >= threshold, 1, np.where(probs <= 1 - threshold, -1, 0))
    hold_ns = horizon * MINUTE_NS
    cost = 2 * costs.per_side_bps / 1e4
    signals = np.flatnonzero(signal)
    # the row holding the entry bar of each signal (one bar = one minute), or -1 when it is missing
    entry_times = timestamps[signals] + costs.entry_delay_bars * MINUTE_NS
    at = np.minimum(np.searchsorted(timestamps, entry_times), len(timestamps) - 1)
    entry_rows = np.where(timestamps[at] == entry_times, at, -1)
    signal_rows: list[int] = []
    fill_rows: list[int] = []
    unfilled = 0
    free_at = np.iinfo(np.int64).min
    same_side_free_at, last_side = free_at, 0
    for row, entry_time, fill in zip(signals, entry_times, entry_rows, strict=True):
        if entry_time < free_at:
            continue  # a position is open
        if signal[row] == last_side and entry_time < same_side_free_at:
            continue  # the same side again, before the re-entry wait is over
        if fill < 0:
            unfilled += 1
            continue
        signal_rows.append(row)
        fill_rows.append(fill)
        free_at = entry_time + hold_ns
        same_side_free_at = free_at + costs.same_side_reentry_bars * MINUTE_NS
        last_side = signal[row]
    rows = np.asarray(fill_rows, dtype=np.int64)
    sides = signal[np.asarray(signal_rows, dtype=np.int64)]
    gross = sides * forward_returns[rows]
    pnl = gross - cost

    minutes = covered_minutes(timestamps, horizon)
    n = len(rows)
    summary: dict[str, float | int | None] = {
        "threshold": float(threshold),
        "entry_delay_bars": costs.entry_delay_bars,
        "same_side_reentry_bars": costs.same_side_reentry_bars,
        "fee_bps": float(costs.fee_bps),
        "slippage_bps": float(costs.slippage_bps),
        "cost_bps_per_side": costs.per_side_bps,
        "trades": n,
        "signals_without_entry_bar": unfilled,
        "longs": int(np.sum(sides == 1)),
        "shorts": int(np.sum(sides == -1)),
        "breakeven_move_bps": 2 * costs.per_side_bps,
        "win_rate": float(np.mean(pnl > 0)) if n else None,
        "gross_win_rate": float(np.mean(gross > 0)) if n else None,
        "total_pnl": float(pnl.sum()),
        "avg_pnl": float(pnl.mean()) if n else None,
        "sharpe": _annualised_sharpe(pnl, minutes),
        "max_drawdown": max_drawdown(pnl),
        "exposure": float(n * horizon / minutes),
        "minutes_with_data": minutes,
    }
    return BacktestResult(entry_times=timestamps[rows], sides=sides, pnl=pnl, summary=summary)


def covered_minutes(timestamps: np.ndarray, horizon: int) -> int:
    """Minutes with data: the union of every row's ``[t, t + horizon)`` (module docstring)."""
    steps = np.diff(np.asarray(timestamps, dtype=np.int64)) // MINUTE_NS
    return int(np.minimum(steps, horizon).sum() + horizon)


def net_return_per_trade(pnl: np.ndarray) -> dict[str, Any]:
    """The mean net return per trade, its 95% CI and the number of trades; ``ci`` is None (with a
    ``note`` saying why) when there are no trades or too few for an interval."""
    pnl = np.asarray(pnl, dtype=np.float64)
    record: dict[str, Any] = {"mean": None, "ci": None, "trades": len(pnl)}
    if len(pnl) == 0:
        return {**record, "note": "no trades"}
    record["mean"] = float(pnl.mean())
    try:
        # trades never overlap (one position at a time), so their dependence spans one trade
        interval = mean_interval(pnl, horizon=1)
    except CrpbotError as exc:
        return {**record, "note": f"not enough trades for a CI ({len(pnl)}): {exc}"}
    return {**record, "ci": [interval.low, interval.high], "ci_method": f"over trades: {interval.method}"}


def _annualised_sharpe(pnl: np.ndarray, span_minutes: float) -> float | None:
    """Per-trade Sharpe scaled by sqrt(trades per year) at the frequency actually traded."""
    if len(pnl) < 2:
        return None
    spread = float(np.std(pnl, ddof=1))
    if spread == 0.0:
        return None
    trades_per_year = len(pnl) / span_minutes * MINUTES_PER_YEAR
    return float(np.mean(pnl) / spread * np.sqrt(trades_per_year))
