"""A scan's per-coin statistics: each cell's aligned per-row differentials, SPA, StepM and DSR.

Cells differ in target and horizon, so their scored rows differ (a target leaves some rows
undefined; those are never scored). Every cell is scored on the same folds' test periods, so the
rows are aligned on the common test minutes (the folds' test rows of the coin's usable minutes),
with a 0 differential where a cell has no label: a row a cell does not score neither helps nor
hurts it, and SPA's bootstrap then resamples the same minutes for every cell, which keeps the
cells' dependence on each other (they all read the same market).

The block length follows the largest horizon of the grid (``multiple_testing.block_length``):
rows of the longest-horizon cells depend on each other over that many rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from crpbot.experiments.walkforward import WalkForwardResult


def cell_differentials(result: WalkForwardResult) -> pd.Series | None:
    """Per scored test row (index: int64 ns), model right - the fold's val-chosen baseline right;
    None for a cell with a failed fold or without a validation-chosen baseline."""
    from crpbot.evaluation.metrics import predicted_up

    if result.summary["folds_failed"] or result.summary.get("pooled") is None:
        return None
    parts = []
    for row in result.folds.to_dict("records"):
        frame = pd.read_parquet(
            result.out_dir / "folds" / str(row["fold"]) / "evaluation" / "predictions.parquet"
        )
        if "baseline_up" not in frame.columns:
            return None
        truth = frame["label"].to_numpy() == 1
        model = predicted_up(frame["prob_up"].to_numpy()) == truth
        baseline = frame["baseline_up"].to_numpy().astype(bool) == truth
        stamps = frame["timestamp"].to_numpy(dtype="datetime64[ns]").view("int64")
        parts.append(pd.Series(model.astype(np.float64) - baseline.astype(np.float64), index=stamps))
    return pd.concat(parts)


def scored_minutes(timestamps: np.ndarray, folds: list[Any]) -> np.ndarray:
    """The folds' test rows of the coin's usable minutes, in time order (they tile the span)."""
    return np.concatenate([timestamps[fold.bounds["test"][0] : fold.bounds["test"][1]] for fold in folds])


def aligned(minutes: np.ndarray, differentials: dict[str, pd.Series]) -> pd.DataFrame:
    """One column per cell on ``minutes``: its differential where it scored the row, else 0."""
    columns = {}
    for name, series in differentials.items():
        column = np.zeros(len(minutes))
        where = np.searchsorted(minutes, series.index.to_numpy())
        inside = where < len(minutes)
        inside[inside] = minutes[where[inside]] == series.index.to_numpy()[inside]
        column[where[inside]] = series.to_numpy()[inside]
        columns[name] = column
    return pd.DataFrame(columns, index=pd.Index(minutes, name="timestamp_ns"))


def coin_statistics(
    entry: Any, results: dict[str, WalkForwardResult], grid: Any, *, reps: int, seed: int
) -> dict[str, Any]:
    """SPA p-values, StepM survivors, the ranking and the best directional cell's DSR for one coin."""
    from crpbot.evaluation.multiple_testing import (
        BLOCK_PER_HORIZON,
        block_length,
        deflated_sharpe_ratio,
        group_size,
        grouped,
        sharpe_ratio,
        spa_test,
        stepm_survivors,
    )
    from crpbot.experiments.scan import trades_of

    series = {name: cell_differentials(result) for name, result in results.items()}
    excluded = {
        name: "a fold failed" if results[name].summary["folds_failed"] else "no validation-chosen baseline"
        for name, values in series.items()
        if values is None
    }
    tested = {name: values for name, values in series.items() if values is not None}
    minutes = scored_minutes(entry.timestamps, entry.folds)
    matrix = aligned(minutes, tested)
    stats: dict[str, Any] = {
        "rows": len(minutes),
        "cells_tested": list(tested),
        "excluded": excluded,
        "spa": None,
        "stepm_survivors": [],
        "ranking": [],
        "dsr": None,
        "sharpe_per_trade": {},
        "differentials": matrix,
    }
    if not tested:
        return stats
    size = group_size(grid.max_horizon())
    values = grouped(matrix.to_numpy(), size)
    block = block_length(-(-grid.max_horizon() // size), len(values))
    stats["block_length"] = block * size
    stats["block_note"] = (
        f"stationary bootstrap with mean block {block * size} minutes = {BLOCK_PER_HORIZON} × the largest "
        f"horizon ({grid.max_horizon()} minutes: overlapping labels depend over that many rows; capped at "
        f"a tenth of the rows), on means of {size}-minute groups; {reps} replications, seed {seed}"
    )
    stats["spa"] = spa_test(values, block=block, reps=reps, seed=seed)
    columns = stepm_survivors(values, block=block, reps=reps, seed=seed)
    means = matrix.to_numpy().mean(axis=0)
    order = np.argsort(-means, kind="stable")
    stats["ranking"] = [
        {
            "cell": matrix.columns[i],
            "mean_differential": float(means[i]),
            "scored_rows": int(len(tested[matrix.columns[i]])),
        }
        for i in order
    ]
    stats["stepm_survivors"] = [matrix.columns[i] for i in sorted(columns, key=lambda i: -means[i])]
    trades = {
        name: trades_of(results[name]) for name in tested if results[name].summary["backtest"] is not None
    }
    stats["sharpe_per_trade"] = {name: sharpe_ratio(values) for name, values in trades.items()}
    best = next((row["cell"] for row in stats["ranking"] if row["cell"] in trades), None)
    if best is not None:
        stats["dsr"] = {
            "cell": best,
            **deflated_sharpe_ratio(
                trades[best], trial_sharpes=list(stats["sharpe_per_trade"].values()), trials=len(grid.cells)
            ),
        }
    return stats
