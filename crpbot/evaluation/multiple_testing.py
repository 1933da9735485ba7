"""Is the best of many configurations better than a baseline, or only the luckiest of them?

A scan tries many cells (target × horizon × timeframes × family) and the best one's edge is
biased upwards by the choice itself. Three corrections, each for the number of cells tried:

- Hansen's (2005) SPA test of "no cell beats its baseline" over every cell at once, on per-row
  differentials ``d[t, k] = correct(cell k) - correct(its baseline)`` (higher is better);
- Romano & Wolf's (2005) StepM: the cells whose edge survives, at family-wise error ``size``;
- the Deflated Sharpe Ratio (Bailey & López de Prado 2014) of the best directional cell's net
  returns per trade: the probability that its true Sharpe ratio exceeds the largest one expected
  among that many cells with no skill.

SPA and StepM are ``arch``'s (``arch.bootstrap.SPA`` / ``StepM``, with the stationary
bootstrap); this module only turns differentials into their losses (``-d`` against a benchmark
of 0) and fixes the block length. Note that arch 8.0 computes each column's long-run variance but
compares unstudentised means (``SPA.compute``): the noisiest cells (240-minute ones) set the
critical value, so a clear low-variance edge is found with less power (on full BTC a 5-minute
volatility cell with edge +0.072, HAC 95% CI +0.062 to +0.083, got p = 0.038). Dividing each
column by its kernel standard deviation first (Hansen's studentised statistic) was tried and
measured: with one coin's single 14-day fold (~14 bootstrap blocks of 1,440 minutes) the noise in
those standard deviations made it reject a true null in 16% of 100 random-walk scans at the 5%
level, against 4% unstudentised (studies/scan_null.py, studies/README.md). The calibrated test is
kept; its power is the price. Rows of h-minute labels depend on each other over h
rows (``crpbot.evaluation.metrics.dependence_length``), and a block bootstrap with mean block b
keeps lag-k dependence only with weight ~(1 - k/b): a block of ``BLOCK_PER_HORIZON`` × the
largest horizon keeps ~0.97 of the variance of overlapping labels (shared/notes, "Intervals on
overlapping labels"), where b = 2h keeps 0.90 and makes the test too liberal.

Cost: arch's studentisation sums the autocovariances at every lag, quadratic in the rows (60 s
for 40,000 rows × 32 cells on the shared host), so the scan first averages rows in consecutive
groups of ``horizon / GROUPS_PER_HORIZON`` minutes (:func:`grouped`): every cell's mean and the
hypothesis are unchanged, the dependence shrinks by the same factor, and the block length is
counted in groups.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from crpbot.errors import CrpbotError

BLOCK_PER_HORIZON = 6
GROUPS_PER_HORIZON = 12
MIN_BLOCKS = 10
EULER_GAMMA = 0.5772156649015329


def group_size(max_horizon: int) -> int:
    """Rows averaged into one before the bootstrap: 1/``GROUPS_PER_HORIZON`` of the largest horizon."""
    return max(1, int(max_horizon) // GROUPS_PER_HORIZON)


def grouped(values: np.ndarray, size: int) -> np.ndarray:
    """Means of consecutive groups of ``size`` rows (the last group may be shorter)."""
    values = np.asarray(values, dtype=np.float64)
    if size == 1:
        return values
    starts = np.arange(0, len(values), size)
    return np.add.reduceat(values, starts, axis=0) / np.diff(np.r_[starts, len(values)])[:, None]


def block_length(max_horizon: int, rows: int) -> int:
    """The stationary bootstrap's mean block: ``BLOCK_PER_HORIZON`` × the largest horizon, and at
    most rows / ``MIN_BLOCKS`` (fewer blocks than that and any block bootstrap is too narrow)."""
    if rows < MIN_BLOCKS:
        raise CrpbotError(f"{rows} aligned rows are too few for a bootstrap test")
    return max(1, min(BLOCK_PER_HORIZON * int(max_horizon), rows // MIN_BLOCKS))


def _losses(differentials: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(differentials, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] < 1 or not np.all(np.isfinite(values)):
        raise CrpbotError(f"differentials must be a finite [rows, cells] array, got shape {values.shape}")
    return np.zeros(len(values)), -values


def spa_test(differentials: np.ndarray, *, block: int, reps: int = 1000, seed: int = 0) -> dict[str, float]:
    """Hansen's SPA p-values (lower, consistent, upper) of H0: no column's mean differential is > 0.

    The consistent p-value is the one to read; lower and upper bracket it (White's Reality Check
    is the upper one's conservative relative)."""
    from arch.bootstrap import SPA

    benchmark, losses = _losses(differentials)
    spa = SPA(benchmark, losses, block_size=block, reps=reps, bootstrap="stationary", seed=seed)
    spa.compute()
    return {name: float(value) for name, value in spa.pvalues.items()}


def stepm_survivors(
    differentials: np.ndarray, *, block: int, size: float = 0.05, reps: int = 1000, seed: int = 0
) -> list[int]:
    """Columns whose mean differential is > 0 by Romano-Wolf's StepM at family-wise error ``size``."""
    from arch.bootstrap import StepM

    benchmark, losses = _losses(differentials)
    stepm = StepM(
        benchmark, losses, size=size, block_size=block, reps=reps, bootstrap="stationary", seed=seed
    )
    stepm.compute()
    return sorted(int(column) for column in stepm.superior_models)


def sharpe_ratio(returns: np.ndarray) -> float | None:
    """Mean over standard deviation of per-trade returns (not annualised); None below 2 trades or
    with no dispersion."""
    values = np.asarray(returns, dtype=np.float64)
    if len(values) < 2:
        return None
    sd = float(values.std(ddof=1))
    return float(values.mean()) / sd if sd > 0 else None


def expected_max_sharpe(trial_variance: float, trials: int) -> float:
    """E[max] of ``trials`` Sharpe ratios with no skill and variance ``trial_variance`` (Bailey &
    López de Prado 2014, eq. for SR_0): sqrt(V) ((1 - γ) Φ⁻¹(1 - 1/N) + γ Φ⁻¹(1 - 1/(N e)))."""
    from scipy.stats import norm

    if trials < 1:
        raise CrpbotError(f"invalid number of trials {trials}: must be >= 1")
    if trials == 1 or trial_variance <= 0:
        return 0.0
    return math.sqrt(trial_variance) * (
        (1 - EULER_GAMMA) * norm.ppf(1 - 1 / trials) + EULER_GAMMA * norm.ppf(1 - 1 / (trials * math.e))
    )


def deflated_sharpe_ratio(returns: np.ndarray, *, trial_sharpes: list[float], trials: int) -> dict[str, Any]:
    """The Deflated Sharpe Ratio of ``returns`` (the chosen cell's net returns per trade).

    ``trial_sharpes``: the per-trade Sharpe ratios of the cells that have one (their variance is
    V[SR] across trials); ``trials``: how many cells were tried in all. DSR = Φ((SR - SR_0)
    sqrt(T - 1) / sqrt(1 - γ3 SR + (γ4 - 1)/4 SR²)), γ3 the skewness and γ4 the (non-excess)
    kurtosis of the returns, T the number of trades. A DSR above 0.95 says the Sharpe ratio is
    unlikely to be the best of ``trials`` lucky draws.
    """
    from scipy.stats import kurtosis, norm, skew

    values = np.asarray(returns, dtype=np.float64)
    sharpe = sharpe_ratio(values)
    finite = [s for s in trial_sharpes if s is not None and math.isfinite(s)]
    variance = float(np.var(finite, ddof=1)) if len(finite) >= 2 else 0.0
    record: dict[str, Any] = {
        "sharpe_per_trade": sharpe,
        "trades": len(values),
        "trials": trials,
        "trial_sharpe_variance": variance,
        "expected_max_sharpe": expected_max_sharpe(variance, trials),
        "dsr": None,
    }
    if sharpe is None or len(values) < 3:
        record["note"] = "too few trades (or no dispersion) for a Sharpe ratio"
        return record
    gamma3 = float(skew(values))
    gamma4 = float(kurtosis(values, fisher=False))
    denominator = 1 - gamma3 * sharpe + (gamma4 - 1) / 4 * sharpe**2
    record.update({"skewness": gamma3, "kurtosis": gamma4})
    if denominator <= 0:
        record["note"] = "the moments give no positive variance for the Sharpe ratio"
        return record
    z = (sharpe - record["expected_max_sharpe"]) * math.sqrt(len(values) - 1) / math.sqrt(denominator)
    record["dsr"] = float(norm.cdf(z))
    return record
