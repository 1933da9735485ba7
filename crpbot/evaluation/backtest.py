"""A deliberately plain backtest of the direction signal, costs included.

Long when P(up) >= tau, short when P(up) <= 1 - tau, flat otherwise. A position is
held for exactly ``horizon`` minutes (the label's horizon, so the realised return is
the row's forward return) and no new position opens before it is closed. PnL is the
return on one unit of notional per trade, summed (no compounding, no leverage), minus
``fee_bps + slippage_bps`` on each side.

Entry is at close[t], the last bar the model saw, with no latency; ``slippage_bps`` is the
only allowance for the price moving before a real order fills. ``win_rate`` is after costs
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
    if np.any(np.diff(timestamps) <= 0):
        raise CrpbotError("backtest: timestamps must be strictly increasing")
    if not np.all(np.isfinite(forward_returns)):
        raise CrpbotError("backtest: forward returns must be finite (labelled rows only)")

    signal = np.where(probs >= threshold, 1, np.where(probs <= 1 - threshold, -1, 0))
    hold_ns = horizon * MINUTE_NS
    cost = 2 * (fee_bps + slippage_bps) / 1e4
    entries: list[int] = []
    free_at = np.iinfo(np.int64).min
    for row in np.flatnonzero(signal):
        if timestamps[row] >= free_at:
            entries.append(row)
            free_at = timestamps[row] + hold_ns
    rows = np.asarray(entries, dtype=np.int64)
    sides = signal[rows]
    gross = sides * forward_returns[rows]
    pnl = gross - cost

    span_minutes = (timestamps[-1] - timestamps[0]) / MINUTE_NS + horizon
    n = len(rows)
    summary: dict[str, float | int | None] = {
        "threshold": float(threshold),
        "cost_bps_per_side": float(fee_bps + slippage_bps),
        "trades": n,
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
