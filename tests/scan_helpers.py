"""Synthetic 1-minute bars for the scan tests: a random walk, or one with a planted lagged signal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

START = pd.Timestamp("2024-01-01", tz="UTC")
BLOCK = 15  # minutes per planted block
LAG_BLOCKS = 5  # a block's direction is set by the block that ended 60 minutes before it began


def synthetic_returns(minutes: int, *, strength: float, seed: int, sigma: float = 0.002) -> np.ndarray:
    """1-minute log returns in 15-minute clock blocks: block b drifts by ``strength`` × sigma per
    minute, up when block b-5 moved more than the median |block move| and down when it moved less.

    The signal is the size of the 15 minutes that ended 60 minutes before: a column only the
    model's lookback of 120 holds (``log_ret_15@60``), and as an even function of it, out of reach
    of a linear rule; the baselines' rows read 60 minutes back at most (one 120-minute average).
    ``strength=0`` is a random walk."""
    rng = np.random.default_rng(seed)
    returns = rng.normal(0.0, sigma, minutes)
    blocks = minutes // BLOCK
    drift = strength * sigma
    # the median |block move| under the planted drift, so up and down blocks are equally frequent
    median = float(np.median(np.abs(rng.normal(BLOCK * drift, sigma * np.sqrt(BLOCK), 200_000))))
    sums = np.zeros(blocks)
    for block in range(blocks):
        part = slice(block * BLOCK, (block + 1) * BLOCK)
        if block >= LAG_BLOCKS and drift > 0:
            returns[part] += drift if abs(sums[block - LAG_BLOCKS]) > median else -drift
        sums[block] = returns[part].sum()
    return returns


def bars_frame(returns: np.ndarray, *, seed: int, start: pd.Timestamp = START) -> pd.DataFrame:
    rng = np.random.default_rng(seed + 1)
    close = 100.0 * np.exp(np.cumsum(returns))
    open_ = np.r_[100.0, close[:-1]]
    spread = np.abs(rng.normal(0.0, 0.0005, len(close)))
    return pd.DataFrame(
        {
            "timestamp": start + pd.to_timedelta(np.arange(len(close)), unit="min"),
            "open": open_,
            "high": np.maximum(open_, close) * (1 + spread),
            "low": np.minimum(open_, close) * (1 - spread),
            "close": close,
            "volume": rng.lognormal(3.0, 0.5, len(close)),
        }
    )


def write_bars(directory: str | Path, coin: str, *, days: float, strength: float, seed: int) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    minutes = int(days * 1440)
    path = directory / f"{coin}-USD_1m.parquet"
    frame = bars_frame(synthetic_returns(minutes, strength=strength, seed=seed), seed=seed)
    frame.to_parquet(path, index=False)
    return path
