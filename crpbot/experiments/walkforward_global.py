"""Walk-forward of a global model: one network per fold for all its coins, scored per coin.

The folds are planned on the minutes every coin has (:func:`crpbot.data.folds.plan_folds` on the
intersection of the coins' usable timestamps), so every coin is split at the same times in
every fold; where the coins have the same minutes (the development data) these are exactly the
folds :func:`crpbot.experiments.walkforward.run_walkforward` plans for each coin alone, which makes
the per-coin and the global model contenders on the same folds. Each fold:

1. prepares every coin at the fold's ``split_times`` (``prepare_coins``: per-coin train-only
   scalers, one shared copy of the arrays);
2. trains one model with :func:`crpbot.model.fit.fit` on all coins' windows;
3. saves the global artifact once and scores it per coin with
   :func:`crpbot.evaluation.evaluate.evaluate_model` (``coin=...``, handing over that coin's part of
   the prepared data), so a coin's fold metrics are what ``crpbot evaluate --coin`` prints.

No temperature is fitted (a fold's model is scored at temperature 1): accuracy and the edge over
the baselines do not depend on it, calibration does. The outputs of each coin
(``<out_dir>/<COIN>/folds.csv``, ``summary.json``, ``report.md``, ``walkforward.png``) have the
layout and columns of ``run_walkforward``'s, so they are read alike. Folds run one after another
in this process: a global fold is already every coin's work, and nothing here starts Ray.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crpbot.config import TrainConfig
from crpbot.data.folds import FoldSpec
from crpbot.errors import CrpbotError
from crpbot.evaluation.backtest import Costs
from crpbot.evaluation.gate import GateThresholds
from crpbot.experiments.walkforward import WalkForwardResult, fold_periods, shared_timestamps, write_outputs
from crpbot.experiments.walkforward_summary import fold_metrics, folds_table, summarize


def run_global_walkforward(
    config: TrainConfig,
    spec: FoldSpec,
    *,
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    thresholds: GateThresholds | None = None,
    costs: Costs | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, WalkForwardResult]:
    """Train a global model (``config.coins``) fold by fold and score each coin; one result per coin."""
    from crpbot.data.bars import load_bars
    from crpbot.data.folds import plan_folds
    from crpbot.data.multicoin import coin_inputs, load_coins_context, prepare_coins
    from crpbot.evaluation.evaluate import evaluate_model
    from crpbot.model.family import fit_model
    from crpbot.model.inference import save_model_artifact
    from crpbot.registry.artifact import check_output_location

    if not config.coins:
        raise CrpbotError("a global walk-forward needs a config with coins (e.g. coins: [BTC, ETH, SOL])")
    thresholds = thresholds if thresholds is not None else GateThresholds()
    costs = costs if costs is not None else Costs()
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise CrpbotError(f"output directory already exists: {out_dir}")
    check_output_location(out_dir)
    inputs = coin_inputs(config.coins, data_dir)
    context = load_coins_context(config, inputs)  # folds on the minutes every context coin has too
    coins_bars = []
    for coin, path in inputs.items():
        bars = load_bars(path)
        bars.coin = coin
        coins_bars.append(bars)
    common = shared_timestamps(coins_bars, context)
    folds = plan_folds(common, spec, lookback=config.lookback, horizon=config.horizon)
    log(
        f"Global walk-forward of {', '.join(inputs)}: {len(folds)} folds ({spec.window}, train "
        f"{spec.train_days:g} / val {spec.val_days:g} / test {spec.test_days:g} days of bars) -> {out_dir}"
    )

    records: dict[str, list[dict[str, Any]]] = {coin: [] for coin in inputs}
    for fold in folds:
        started = time.perf_counter()
        data = prepare_coins(config, inputs, split_times=fold.split_times)
        result = fit_model(config, data, log=lambda line, k=fold.index: log(f"[fold {k}] {line}"))
        trained = time.perf_counter()
        artifact = save_model_artifact(
            out_dir / "folds" / str(fold.index) / "model",
            model_state=result.best_state,
            config=config,
            data=data,
            history=result.history,
            best_epoch=result.best_epoch,
            input_path=None,
        )
        for coin in data.coins:
            evaluation = evaluate_model(
                artifact,
                coin=coin,
                out_dir=out_dir / coin / "folds" / str(fold.index) / "evaluation",
                thresholds=thresholds,
                costs=costs,
                prepared=data.part(coin),
                log=lambda _: None,
            )
            records[coin].append(
                {
                    **fold_periods(fold),
                    "fold": fold.index,
                    "status": "ok",
                    "error": None,
                    "best_epoch": result.best_epoch,
                    "seconds_train": trained - started,
                    **fold_metrics(evaluation.metrics),
                }
            )
            log(f"fold {fold.index} {coin}: test accuracy {evaluation.metrics['accuracy']:.4f}")
        del data  # one fold's arrays at a time

    results = {}
    for coin, rows in records.items():
        plan = {
            "coin": coin,
            "coins": list(inputs),
            "input_path": str(inputs[coin]),
            "train_config": config.to_dict(),
            "spec": dataclasses.asdict(spec),
        }
        table = folds_table(rows)
        summary = summarize(plan, rows, out_dir / coin, config.horizon, thresholds, costs)
        summary["global_model_of"] = list(inputs)
        write_outputs(out_dir / coin, table, summary)
        results[coin] = WalkForwardResult(
            out_dir=out_dir / coin, folds=table, summary=summary, trained=[fold.index for fold in folds]
        )
    return results
