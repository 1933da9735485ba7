"""How often does the scan's SPA test reject when no cell has skill? (pure numpy + arch, no Ray)

Each seed draws a random walk of 1-minute log prices and scores 8 cells (direction at horizons 5,
15, 60 and 240 minutes, each predicted by two skill-less rules: the sign of an independent walk's
past move, and the sign of the coin's own move lagged 2h, which is noise on a random walk) against
the momentum baseline, on overlapping labels -- the shape of a scan's differentials under the null.
SPA and StepM run as the scan runs them (crpbot.experiments.scan_stats): rows averaged in groups
of 240/12 = 20 minutes, stationary bootstrap with mean block 6 × 240 minutes, on as many rows as
one coin's 2 folds of 14 days (40,320).

Usage: python studies/scan_null.py [--seeds 200] [--rows 40320] [--reps 300]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from crpbot.evaluation.multiple_testing import (
    BLOCK_PER_HORIZON,
    block_length,
    group_size,
    grouped,
    spa_test,
    stepm_survivors,
)

HORIZONS = (5, 15, 60, 240)


def null_cells(seed: int, rows: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    warm = 2 * max(HORIZONS)
    price = np.cumsum(rng.normal(size=rows + warm + max(HORIZONS)))
    other = np.cumsum(rng.normal(size=len(price)))
    now = np.arange(warm, warm + rows)
    columns = []
    for h in HORIZONS:
        label = price[now + h] > price[now]
        momentum = price[now] > price[now - h]
        for guess in (other[now] > other[now - h], price[now - h] > price[now - 2 * h]):
            columns.append((guess == label).astype(float) - (momentum == label).astype(float))
    return np.column_stack(columns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--rows", type=int, default=40320)
    parser.add_argument("--reps", type=int, default=300)
    parser.add_argument(
        "--block-per-horizon", type=float, default=BLOCK_PER_HORIZON, help="mean block / largest horizon"
    )
    args = parser.parse_args()
    size = group_size(max(HORIZONS))
    groups = -(-args.rows // size)
    block = max(1, min(round(args.block_per_horizon * max(HORIZONS) / size), groups // 10))
    if args.block_per_horizon == BLOCK_PER_HORIZON:
        assert block == block_length(-(-max(HORIZONS) // size), groups), "the scan's own block"
    started = time.perf_counter()
    pvalues, survivors = [], 0
    for seed in range(args.seeds):
        values = grouped(null_cells(seed, args.rows), size)
        pvalues.append(spa_test(values, block=block, reps=args.reps, seed=seed)["consistent"])
        survivors += bool(stepm_survivors(values, block=block, reps=args.reps, seed=seed))
    p = np.array(pvalues)
    print(
        f"{args.seeds} seeds, {args.rows:,} rows × {len(HORIZONS) * 2} cells in groups of {size}, "
        f"block {block} groups, reps {args.reps}"
    )
    print(f"SPA p < 0.05 in {np.mean(p < 0.05):.3f} of seeds, < 0.10 in {np.mean(p < 0.10):.3f}")
    print(f"p-value deciles: {np.round(np.quantile(p, np.linspace(0.1, 0.9, 9)), 3).tolist()}")
    print(f"a StepM survivor (a confirmation would run) in {survivors} of {args.seeds} seeds")
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
