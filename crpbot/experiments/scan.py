"""``crpbot scan``: walk-forward every cell of a grid on Ray, then ask whether the best is luck.

1. Before Ray: the grid's cells are built (:mod:`crpbot.experiments.scan_grid`), each coin's bars
   loaded, their last ``holdout_days`` split off as the final period (:mod:`scan_final`), and one
   set of folds planned per coin on the rows every cell can use (largest lookback and horizon
   for the purge), so every cell is scored on the same test periods.
2. Each cell × coin is a walk-forward (:func:`crpbot.experiments.walkforward.plan_walkforward`)
   in ``<out>/cells/<cell>/<COIN>``; all their folds run as one pool of Ray tasks (one per fold),
   each coin's development bars put in the object store once. A rerun with the same ``--out``
   skips finished folds; a failed cell is reported with its reason and the rest stand.
3. Per coin: each cell's per-row differential (model right - its validation-chosen best
   baseline right) on the folds' pooled test rows, aligned on the common test minutes (0 where
   a cell has no label: its target leaves the row undefined), then SPA, StepM and the Deflated
   Sharpe Ratio (:mod:`crpbot.evaluation.multiple_testing`).
4. Per coin with a StepM survivor: the best survivor is confirmed once on the final period
   (:mod:`scan_final`), written as a normal artifact that ``crpbot promote`` accepts.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crpbot.data.folds import Fold, FoldSpec
from crpbot.errors import CrpbotError
from crpbot.evaluation.backtest import TRADES_FILE, Costs
from crpbot.evaluation.gate import GateThresholds
from crpbot.experiments.scan_final import FinalPeriod, iso
from crpbot.experiments.scan_grid import ScanBudget, ScanGrid, budget_for
from crpbot.experiments.walkforward import WalkForwardPlan, WalkForwardResult
from crpbot.ray_runtime import ClusterSettings


@dataclass(frozen=True)
class ScanResult:
    out_dir: Path
    cells: pd.DataFrame  # cells.csv: one row per cell × coin
    scan: dict[str, Any]  # scan.json

    @property
    def failed(self) -> bool:
        """A cell failed or a confirmation was refused: the command exits 1."""
        refused = any((c or {}).get("status") == "refused" for c in self.scan["confirmation"].values())
        return bool(self.scan["failed_cells"]) or refused


@dataclass
class _Coin:
    """One coin's inputs, split and folds, fixed before Ray."""

    coin: str
    input_path: Path
    bars: Any  # all bars: only a confirmation reads past the development part
    development: Any
    final: FinalPeriod
    timestamps: np.ndarray  # the rows every cell can use, the folds' rows
    folds: list[Fold]


def run_scan(
    grid: ScanGrid,
    coins: list[str],
    *,
    input_dir: str | Path | None = None,
    budget: str | ScanBudget | None = None,
    holdout_days: float | None = None,
    folds: int | None = None,
    out_dir: str | Path | None = None,
    cluster: ClusterSettings | None = None,
    thresholds: GateThresholds | None = None,
    costs: Costs | None = None,
    ledger: str | Path | None = None,
    reuse_final: bool = False,
    reps: int = 1000,
    seed: int = 0,
    max_parallel: int | None = None,
    log: Callable[[str], None] = print,
) -> ScanResult:
    """Scan every cell of ``grid`` on ``coins``; outputs in ``out_dir`` (see the module docstring).

    ``budget`` (a name, default the grid's, or a :class:`ScanBudget`) fixes the folds and the
    recurrent cells' training; ``folds`` keeps only the last N folds; ``holdout_days`` (default
    the budget's) is the final period.
    Every check that can fail on the inputs runs before Ray starts.
    """
    from crpbot.experiments.scan_final import ledger_path
    from crpbot.experiments.scan_report import write_scan_outputs
    from crpbot.experiments.walkforward import claim_out_dir, plan_walkforward
    from crpbot.model.family import check_device
    from crpbot.registry.artifact import check_output_location

    started = time.perf_counter()
    cluster = cluster if cluster is not None else ClusterSettings()
    thresholds = thresholds if thresholds is not None else GateThresholds()
    costs = costs if costs is not None else Costs()
    chosen = budget if isinstance(budget, ScanBudget) else budget_for(budget or grid.budget)
    spec = dataclasses.replace(chosen.spec, folds=folds) if folds is not None else chosen.spec
    holdout = holdout_days if holdout_days is not None else chosen.holdout_days
    if reps < 100:
        raise CrpbotError(f"invalid reps {reps}: at least 100 bootstrap replications")
    cells = {
        cell.name: cell.config.replace(**chosen.rnn) if cell.config.model == "rnn" else cell.config
        for cell in grid.cells
    }
    for config in cells.values():
        check_device(config, cluster.gpu)
    out_dir = (
        Path(out_dir) if out_dir is not None else Path("runs") / f"scan-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    check_output_location(out_dir)
    ledger = ledger_path(ledger)
    data = _load_coins(coins, input_dir, holdout, spec, grid, cells)
    claim_out_dir(
        out_dir,
        {
            "grid": grid.raw,
            "budget": chosen.name,
            "spec": dataclasses.asdict(spec),
            "holdout_days": holdout,
            "coins": [entry.coin for entry in data],
            "inputs": {entry.coin: str(entry.input_path) for entry in data},
            "final_period": {entry.coin: entry.final.to_dict() for entry in data},
            "evaluation": {"thresholds": dataclasses.asdict(thresholds), **dataclasses.asdict(costs)},
        },
        kind="scan",
    )
    plans = {
        (name, entry.coin): plan_walkforward(
            config,
            entry.coin,
            spec,
            input_path=entry.input_path,
            out_dir=out_dir / "cells" / name / entry.coin.split("-")[0],
            thresholds=thresholds,
            costs=costs,
            bars=entry.development,
            folds=entry.folds,
        )
        for entry in data
        for name, config in cells.items()
    }
    todo = sum(len(plan.todo) for plan in plans.values())
    log(
        f"Scan of {len(cells)} cells × {len(data)} coins, {len(data[0].folds)} folds each "
        f"({spec.window}, train {spec.train_days:g} / val {spec.val_days:g} / test {spec.test_days:g} days "
        f"of bars): {todo} fold tasks to run, {sum(len(p.folds) for p in plans.values()) - todo} finished "
        f"before -> {out_dir}"
    )
    for entry in data:
        log(
            f"{entry.coin}: final period {iso(entry.final.start_ns)} .. {iso(entry.final.end_ns)} "
            f"({entry.final.rows:,} bars) withheld until a confirmation"
        )
    pool_started = time.perf_counter()
    results = _run_cells(plans, cluster, max_parallel, log)
    seconds_cells = time.perf_counter() - pool_started
    from crpbot.experiments.scan_stats import coin_statistics

    statistics = {
        entry.coin: coin_statistics(
            entry, {name: results[(name, entry.coin)] for name in cells}, grid, reps=reps, seed=seed
        )
        for entry in data
    }
    for coin, stats in statistics.items():
        log(_verdict_line(coin, stats))
    from crpbot.experiments.scan_confirm import confirm

    confirmation = confirm(
        data,
        statistics,
        cells,
        spec,
        out_dir=out_dir,
        cluster=cluster,
        thresholds=thresholds,
        costs=costs,
        ledger=ledger,
        reuse_final=reuse_final,
        log=log,
    )
    result = write_scan_outputs(
        out_dir,
        grid=grid,
        budget=chosen,
        spec=spec,
        holdout_days=holdout,
        data=data,
        results=results,
        statistics=statistics,
        confirmation=confirmation,
        ledger=ledger,
        seconds={"total": time.perf_counter() - started, "cells": seconds_cells, "fold_tasks": todo},
    )
    log(f"Scan written to {out_dir}")
    return result


def _load_coins(
    coins: list[str],
    input_dir: str | Path | None,
    holdout: float,
    spec: FoldSpec,
    grid: ScanGrid,
    cells: dict[str, Any],
) -> list[_Coin]:
    """Every coin's bars, final period and folds; bad input fails here, before Ray."""
    from crpbot.data.bars import default_input, find_input, load_bars, normalize_coin
    from crpbot.data.cross_asset import ContextSpec, load_context
    from crpbot.data.folds import plan_folds
    from crpbot.experiments.scan_final import split_final
    from crpbot.experiments.walkforward import shared_timestamps

    names = [normalize_coin(coin) for coin in coins]
    if not names:
        raise CrpbotError("no coins to scan")
    if len(set(names)) != len(names):
        raise CrpbotError(f"a coin is listed twice in --coins {','.join(coins)}")
    loaded = []
    for coin in names:
        path = (find_input(input_dir, coin) if input_dir is not None else default_input(coin)).resolve()
        bars = load_bars(path)
        bars.coin = coin
        loaded.append((coin, path, bars))
    first = max(bars.report.first for _, _, bars in loaded)
    last = min(bars.report.last for _, _, bars in loaded)
    if first >= last:
        spans = ", ".join(f"{coin} {b.report.first} .. {b.report.last}" for coin, _, b in loaded)
        raise CrpbotError(f"the coins have no overlapping data: {spans}")
    timeframes = {tuple(config.timeframes) for config in cells.values()}
    out = []
    for coin, path, bars in loaded:
        development, final = split_final(bars, holdout, coin)
        common = None
        for frames in sorted(timeframes):
            context = load_context(coin, ContextSpec.from_names([], "all", frames), path)
            stamps = shared_timestamps([development], context)
            common = stamps if common is None else np.intersect1d(common, stamps, assume_unique=True)
        try:
            folds = plan_folds(common, spec, lookback=grid.max_lookback(), horizon=grid.max_horizon())
        except CrpbotError as exc:
            raise CrpbotError(
                f"{coin}: the final period of {holdout:g} days leaves less than one fold before it: {exc}"
            ) from exc
        out.append(_Coin(coin, path, bars, development, final, common, folds))
    return out


def _run_cells(
    plans: dict[tuple[str, str], WalkForwardPlan],
    cluster: ClusterSettings,
    max_parallel: int | None,
    log: Callable[[str], None],
) -> dict[tuple[str, str], WalkForwardResult]:
    """Every plan's folds in one pool; a cell's summary is written (and one line logged, with the
    time left estimated from the folds finished so far) as soon as its last fold finishes."""
    from crpbot.experiments.walkforward import finish_walkforward, run_fold_tasks

    keys = {id(plan): key for key, plan in plans.items()}
    left = {key: len(plan.todo) for key, plan in plans.items()}
    total = sum(left.values())
    results: dict[tuple[str, str], WalkForwardResult] = {}
    started = time.perf_counter()
    done = 0

    def finish(key: tuple[str, str]) -> None:
        results[key] = finish_walkforward(plans[key])
        elapsed = time.perf_counter() - started
        eta = elapsed / done * (total - done) if done else 0.0
        progress = f"[{len(results)}/{len(plans)} cells] {key[0]} {key[1]}"
        log(f"{progress}: {_cell_text(results[key])}; ~{eta / 60:.1f} min left")

    def on_fold(plan: WalkForwardPlan, fold: Fold, record: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        key = keys[id(plan)]
        left[key] -= 1
        if record["status"] != "ok":
            log(f"{key[0]} {key[1]} fold {fold.index} failed: {record['error']}")
        if left[key] == 0:
            finish(key)

    for key, count in left.items():
        if count == 0:
            finish(key)
    run_fold_tasks(list(plans.values()), cluster, max_parallel=max_parallel, log=log, on_fold=on_fold)
    return results


def _cell_text(result: WalkForwardResult) -> str:
    summary = result.summary
    if summary["folds_failed"]:
        return f"FAILED ({summary['folds_failed'][0]['error']})"
    pooled, edge = summary["pooled"], summary["pooled_edge"]
    text = (
        f"accuracy {pooled['accuracy']:.4f} ({pooled['accuracy_ci'][0]:.4f}-{pooled['accuracy_ci'][1]:.4f})"
    )
    if edge.get("edge") is not None:
        text += f", edge {edge['edge']:+.4f} ({edge['ci_low']:+.4f} to {edge['ci_high']:+.4f})"
    net = summary.get("pooled_net_return_per_trade")
    if net is not None and net.get("mean") is not None:
        text += f", net/trade {net['mean'] * 1e4:+.1f} bps"
    return text


def _verdict_line(coin: str, stats: dict[str, Any]) -> str:
    spa = stats["spa"]
    if spa is None:
        return f"{coin}: no finished cell to test"
    survivors = ", ".join(stats["stepm_survivors"]) or "none"
    return (
        f"{coin}: best cell {stats['ranking'][0]['cell']} (mean differential "
        f"{stats['ranking'][0]['mean_differential']:+.4f}); SPA p = {spa['consistent']:.3f} over "
        f"{len(stats['ranking'])} cells; StepM survivors: {survivors}"
    )


def trades_of(result: WalkForwardResult) -> np.ndarray:
    """The net returns of every finished fold's trades (empty for a target with no direction)."""
    paths = [
        result.out_dir / "folds" / str(row["fold"]) / "evaluation" / TRADES_FILE
        for row in result.folds.to_dict("records")
        if row["status"] == "ok"
    ]
    frames = [pd.read_parquet(path)["net_return"].to_numpy(np.float64) for path in paths if path.is_file()]
    return np.concatenate(frames) if frames else np.zeros(0)
