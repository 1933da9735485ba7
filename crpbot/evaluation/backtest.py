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
``slippage_bps`` is the allowance for the fill price itself. ``win_rate`` is after costs
(the net PnL of the trade > 0); ``gross_win_rate`` is the share of trades whose direction was
right before costs (side * forward return > 0; a flat move is not a win), and
``breakeven_move_bps`` the round-trip cost a move must exceed to win after costs -- with
10 bps per side most 15-minute moves are smaller than that, so ``win_rate`` is far below
the directional accuracy. ``max_drawdown`` is measured on the closed-trade equity curve
(cumulative net PnL after each trade), not on intra-trade marks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crpbot.errors import CrpbotError

MINUTE_NS = 60 * 1_000_000_000
MINUTES_PER_YEAR = 365.25 * 24 * 60
DEFAULT_ENTRY_DELAY_BARS = 1


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
    fee_bps: float = 10.0,
    slippage_bps: float = 0.0,
    entry_delay_bars: int = DEFAULT_ENTRY_DELAY_BARS,
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
    if fee_bps < 0 or slippage_bps < 0:
        raise CrpbotError(f"backtest costs must be >= 0 bps, got fee {fee_bps}, slippage {slippage_bps}")
    if isinstance(entry_delay_bars, bool) or not isinstance(entry_delay_bars, int) or entry_delay_bars < 0:
        raise CrpbotError(f"backtest entry delay must be an integer >= 0 bars, got {entry_delay_bars!r}")
    if np.any(np.diff(timestamps) <= 0):
        raise CrpbotError("backtest: timestamps must be strictly increasing")
    if not np.all(np.isfinite(forward_returns)):
        raise CrpbotError("backtest: forward returns must be finite (labelled rows only)")

    signal = np.where(probs >= threshold, 1, np.where(probs <= 1 - threshold, -1, 0))
    hold_ns = horizon * MINUTE_NS
    cost = 2 * (fee_bps + slippage_bps) / 1e4
    signals = np.flatnonzero(signal)
    # the row holding the entry bar of each signal (one bar = one minute), or -1 when it is missing
    entry_times = timestamps[signals] + entry_delay_bars * MINUTE_NS
    at = np.minimum(np.searchsorted(timestamps, entry_times), len(timestamps) - 1)
    entry_rows = np.where(timestamps[at] == entry_times, at, -1)
    signal_rows: list[int] = []
    fill_rows: list[int] = []
    unfilled = 0
    free_at = np.iinfo(np.int64).min
    for row, entry_time, fill in zip(signals, entry_times, entry_rows, strict=True):
        if entry_time < free_at:
            continue  # a position is open
        if fill < 0:
            unfilled += 1
            continue
        signal_rows.append(row)
        fill_rows.append(fill)
        free_at = entry_time + hold_ns
    rows = np.asarray(fill_rows, dtype=np.int64)
    sides = signal[np.asarray(signal_rows, dtype=np.int64)]
    gross = sides * forward_returns[rows]
    pnl = gross - cost

    span_minutes = (timestamps[-1] - timestamps[0]) / MINUTE_NS + horizon
    n = len(rows)
    summary: dict[str, float | int | None] = {
        "threshold": float(threshold),
        "entry_delay_bars": entry_delay_bars,
        "fee_bps": float(fee_bps),
        "slippage_bps": float(slippage_bps),
        "cost_bps_per_side": float(fee_bps + slippage_bps),
        "trades": n,
        "signals_without_entry_bar": unfilled,
        "longs": int(np.sum(sides == 1)),
        "shorts": int(np.sum(sides == -1)),
        "breakeven_move_bps": float(2 * (fee_bps + slippage_bps)),
        "win_rate": float(np.mean(pnl > 0)) if n else None,
        "gross_win_rate": float(np.mean(gross > 0)) if n else None,
        "total_pnl": float(pnl.sum()),
        "avg_pnl": float(pnl.mean()) if n else None,
        "sharpe": _annualised_sharpe(pnl, span_minutes),
        "max_drawdown": max_drawdown(pnl),
        "exposure": float(n * horizon / span_minutes),
    }
    return BacktestResult(entry_times=timestamps[rows], sides=sides, pnl=pnl, summary=summary)


def _annualised_sharpe(pnl: np.ndarray, span_minutes: float) -> float | None:
    """Per-trade Sharpe scaled by sqrt(trades per year) at the frequency actually traded."""
    if len(pnl) < 2:
        return None
    spread = float(np.std(pnl, ddof=1))
    if spread == 0.0:
        return None
    trades_per_year = len(pnl) / span_minutes * MINUTES_PER_YEAR
    return float(np.mean(pnl) / spread * np.sqrt(trades_per_year))
