"""Backtest rules on small hand-computed series: long, short, flat, costs, no overlap, entry delay.

Most series here enter at the signal's bar (``entry_delay_bars=0``, :func:`at_signal`) so the rules
are read off one array; the entry delay has its own hand-computed test."""

from __future__ import annotations

import numpy as np
import pytest

from crpbot.errors import CrpbotError
from crpbot.evaluation.backtest import MINUTE_NS, Costs, max_drawdown, run_backtest

MINUTES = np.arange(10, dtype=np.int64) * MINUTE_NS
PROBS = np.array([0.7, 0.8, 0.5, 0.2, 0.6, 0.5, 0.1, 0.5, 0.5, 0.9])
RETURNS = np.array([0.01, 0.5, 0.0, -0.02, 0.5, 0.0, 0.03, 0.0, 0.0, 0.002])


def at_signal(fee_bps: float = 10.0, slippage_bps: float = 0.0) -> dict[str, Costs]:
    return {"costs": Costs(fee_bps=fee_bps, slippage_bps=slippage_bps, entry_delay_bars=0)}


def test_long_short_no_overlap_and_fees_by_hand():
    result = run_backtest(MINUTES, PROBS, RETURNS, threshold=0.6, horizon=3, **at_signal(10))
    # entries at minutes 0 (long), 3 (short), 6 (short), 9 (long); 1 and 4 fall inside open trades
    np.testing.assert_array_equal(result.entry_times // MINUTE_NS, [0, 3, 6, 9])
    np.testing.assert_array_equal(result.sides, [1, -1, -1, 1])
    np.testing.assert_allclose(result.pnl, [0.008, 0.018, -0.032, 0.0], atol=1e-12)
    s = result.summary
    assert (s["trades"], s["longs"], s["shorts"]) == (4, 2, 2)
    assert s["win_rate"] == pytest.approx(0.5)
    assert s["total_pnl"] == pytest.approx(-0.006)
    assert s["avg_pnl"] == pytest.approx(-0.0015)
    assert s["max_drawdown"] == pytest.approx(0.032)
    assert s["exposure"] == pytest.approx(4 * 3 / 12)
    per_year = 4 / 12 * 365.25 * 24 * 60
    expected_sharpe = np.mean(result.pnl) / np.std(result.pnl, ddof=1) * np.sqrt(per_year)
    assert s["sharpe"] == pytest.approx(expected_sharpe)


def test_gross_win_rate_and_breakeven_by_hand():
    result = run_backtest(MINUTES, PROBS, RETURNS, threshold=0.6, horizon=3, **at_signal(10))
    s = result.summary
    # gross side * return: +0.01, +0.02, -0.03, +0.002 -> 3 of 4 right; the last one (+20 bps)
    # only matches the 20 bps round trip, so after costs it is not a win (2 of 4)
    assert s["gross_win_rate"] == pytest.approx(0.75)
    assert s["win_rate"] == pytest.approx(0.5)
    assert s["breakeven_move_bps"] == pytest.approx(20.0)
    with_slippage = run_backtest(MINUTES, PROBS, RETURNS, threshold=0.6, horizon=3, **at_signal(10, 2.5))
    assert with_slippage.summary["breakeven_move_bps"] == pytest.approx(25.0)
    assert with_slippage.summary["gross_win_rate"] == pytest.approx(0.75)


def test_right_direction_smaller_than_round_trip_is_a_gross_win_only():
    # every trade right by 5 bps, then wrong by 5 bps once, under 10 bps per side: nothing wins after costs
    times = np.arange(0, 50, 5, dtype=np.int64) * MINUTE_NS
    probs = np.array([0.9, 0.1] * 5)
    moves = np.array([0.0005, -0.0005] * 5)
    moves[-1] = 0.0005  # the last short is wrong
    s = run_backtest(times, probs, moves, threshold=0.6, horizon=5, **at_signal(10)).summary
    assert s["trades"] == 10
    assert s["gross_win_rate"] == pytest.approx(0.9) and s["win_rate"] == 0.0
    flat = run_backtest(times, probs, np.zeros(10), threshold=0.6, horizon=5, **at_signal(0)).summary
    assert flat["gross_win_rate"] == 0.0  # a flat move is not a win


def test_costs_scale_with_fee_and_slippage():
    free = run_backtest(MINUTES, PROBS, RETURNS, threshold=0.6, horizon=3, **at_signal(0))
    costly = run_backtest(MINUTES, PROBS, RETURNS, threshold=0.6, horizon=3, **at_signal(7, 3))
    assert free.summary["total_pnl"] - costly.summary["total_pnl"] == pytest.approx(4 * 2 * 10 / 1e4)


def test_flat_when_nothing_is_confident():
    result = run_backtest(MINUTES, PROBS, RETURNS, threshold=0.95, horizon=3, **at_signal())
    s = result.summary
    assert s["trades"] == 0 and s["total_pnl"] == 0.0 and s["max_drawdown"] == 0.0
    assert s["win_rate"] is None and s["sharpe"] is None and s["exposure"] == 0.0
    assert s["gross_win_rate"] is None and s["breakeven_move_bps"] == pytest.approx(20.0)


def test_no_overlap_is_measured_in_time_across_gaps():
    # rows 1 minute apart, then a 10-minute gap: the row after the gap may trade at once
    times = np.array([0, 1, 12, 13], dtype=np.int64) * MINUTE_NS
    result = run_backtest(times, np.full(4, 0.9), np.full(4, 0.01), threshold=0.6, horizon=5, **at_signal(0))
    np.testing.assert_array_equal(result.entry_times // MINUTE_NS, [0, 12])


def test_max_drawdown_counts_the_start_as_a_peak():
    assert max_drawdown(np.array([-0.01, -0.02, 0.05])) == pytest.approx(0.03)
    assert max_drawdown(np.array([])) == 0.0


def test_bad_inputs():
    with pytest.raises(CrpbotError, match="threshold"):
        run_backtest(MINUTES, PROBS, RETURNS, threshold=0.4, horizon=3, **at_signal())
    with pytest.raises(CrpbotError, match="increasing"):
        run_backtest(MINUTES[::-1], PROBS, RETURNS, threshold=0.6, horizon=3, **at_signal())
    with pytest.raises(CrpbotError, match="invalid fee -1 bps"):
        run_backtest(MINUTES, PROBS, RETURNS, threshold=0.6, horizon=3, **at_signal(-1))


def test_entry_one_bar_after_the_signal_by_hand():
    """Long at 0 and short at 4 (horizon 2, no costs). At the signal's bar they catch the moves the
    signal bars themselves start (+1.0% and -0.8%); one bar later, what a real order could get:
    +0.4% and -(+0.1%). A signal on the last bar has no next bar to enter on."""
    times = np.arange(8, dtype=np.int64) * MINUTE_NS
    probs = np.array([0.9, 0.5, 0.5, 0.5, 0.1, 0.5, 0.5, 0.9])
    moves = np.array([0.010, 0.004, 0.0, 0.0, -0.008, 0.001, 0.0, 0.0])
    now = run_backtest(times, probs, moves, threshold=0.6, horizon=2, **at_signal(0))
    later = run_backtest(times, probs, moves, threshold=0.6, horizon=2, costs=Costs(fee_bps=0))  # 1 bar
    np.testing.assert_array_equal(now.entry_times // MINUTE_NS, [0, 4, 7])
    np.testing.assert_allclose(now.pnl, [0.010, 0.008, 0.0], atol=1e-12)
    np.testing.assert_array_equal(later.entry_times // MINUTE_NS, [1, 5])
    np.testing.assert_array_equal(later.sides, [1, -1])
    np.testing.assert_allclose(later.pnl, [0.004, -0.001], atol=1e-12)
    assert now.summary["total_pnl"] == pytest.approx(0.018)
    assert later.summary["total_pnl"] == pytest.approx(0.003)
    assert (now.summary["entry_delay_bars"], later.summary["entry_delay_bars"]) == (0, 1)
    assert (now.summary["signals_without_entry_bar"], later.summary["signals_without_entry_bar"]) == (0, 1)
    # a gap: the bar after the signal is missing, so that signal is not traded
    gapped = run_backtest(times[[0, 2, 3]], probs[[0, 2, 3]], moves[[0, 2, 3]], threshold=0.6, horizon=2)
    assert gapped.summary["trades"] == 0 and gapped.summary["signals_without_entry_bar"] == 1
    with pytest.raises(CrpbotError, match="invalid entry delay -1 bars: must be an integer >= 0"):
        Costs(entry_delay_bars=-1)


def test_a_same_side_position_waits_after_the_close_a_reversal_does_not():
    """Horizon 2, entry at the signal's bar: long at 0 closes at 2. With a same-side wait of 1 bar
    (freqtrade's backtester), the long signal at 2 waits until 3, and the short at 5 (the long's
    close) opens at once."""
    times = np.arange(8, dtype=np.int64) * MINUTE_NS
    probs = np.array([0.9, 0.5, 0.9, 0.9, 0.5, 0.1, 0.5, 0.5])
    moves = np.full(8, 0.001)
    free = run_backtest(times, probs, moves, threshold=0.6, horizon=2, **at_signal(0))
    waits = run_backtest(
        times,
        probs,
        moves,
        threshold=0.6,
        horizon=2,
        costs=Costs(fee_bps=0, entry_delay_bars=0, same_side_reentry_bars=1),
    )
    np.testing.assert_array_equal(free.entry_times // MINUTE_NS, [0, 2, 5])
    np.testing.assert_array_equal(waits.entry_times // MINUTE_NS, [0, 3, 5])
    np.testing.assert_array_equal(waits.sides, [1, 1, -1])
    assert waits.summary["same_side_reentry_bars"] == 1


def test_a_months_long_gap_is_not_trading_time():
    """Sharpe and exposure count minutes with data: two stretches of bars 90 days apart trade like the
    same stretches back to back (the second starting when the first one's last horizon ends)."""
    horizon, rows = 5, 60
    rng = np.random.default_rng(3)
    probs = rng.uniform(0.2, 0.8, 2 * rows)
    moves = rng.normal(0.0, 0.002, 2 * rows)
    first = np.arange(rows, dtype=np.int64)
    back_to_back = np.r_[first, first[-1] + horizon + first] * MINUTE_NS
    gapped = np.r_[first, first[-1] + 90 * 1440 + first] * MINUTE_NS
    joined = run_backtest(back_to_back, probs, moves, threshold=0.6, horizon=horizon, **at_signal(0))
    apart = run_backtest(gapped, probs, moves, threshold=0.6, horizon=horizon, **at_signal(0))
    np.testing.assert_array_equal(joined.pnl, apart.pnl)
    assert joined.summary["trades"] > 2
    minutes = 2 * (rows + horizon - 1)  # per stretch: [first row, last row + horizon)
    assert joined.summary["minutes_with_data"] == apart.summary["minutes_with_data"] == minutes
    assert apart.summary["exposure"] == joined.summary["exposure"]
    assert apart.summary["exposure"] == pytest.approx(joined.summary["trades"] * horizon / minutes)
    assert apart.summary["sharpe"] == pytest.approx(joined.summary["sharpe"])
    # a gap-free series counts its span plus one horizon, as before
    gap_free = run_backtest(MINUTES, PROBS, RETURNS, threshold=0.6, horizon=3, **at_signal())
    assert gap_free.summary["minutes_with_data"] == 9 + 3


def test_net_return_per_trade_has_a_ci_and_says_why_it_has_none():
    from crpbot.evaluation import backtest

    rng = np.random.default_rng(0)
    pnl = rng.normal(0.001, 0.002, 400)
    net = backtest.net_return_per_trade(pnl)
    assert net["trades"] == 400 and net["mean"] == pytest.approx(pnl.mean())
    assert net["ci"][0] < net["mean"] < net["ci"][1]
    assert backtest.net_return_per_trade(np.array([])) == {
        "mean": None,
        "ci": None,
        "trades": 0,
        "note": "no trades",
    }

    few = backtest.net_return_per_trade(np.array([0.01, 0.02, 0.03]))
    assert few["ci"] is None and few["trades"] == 3 and few["mean"] == pytest.approx(0.02)
    assert few["note"] == (
        "not enough trades for a CI (3): not enough rows for an honest interval: "
        "3 rows, need >= 10 (10 × horizon 1)"
    )


@pytest.mark.parametrize(
    ("costs", "message"),
    [
        ({"fee_bps": float("nan")}, "invalid fee nan bps"),
        ({"slippage_bps": -1.0}, "invalid slippage -1.0 bps"),
        ({"entry_delay_bars": 1.5}, "invalid entry delay 1.5 bars"),
        ({"entry_delay_bars": True}, "invalid entry delay True bars"),
        ({"same_side_reentry_bars": -1}, "invalid same-side re-entry -1 bars"),
    ],
)
def test_costs_are_checked_once(costs, message):
    with pytest.raises(CrpbotError, match=message):
        Costs(**costs)
