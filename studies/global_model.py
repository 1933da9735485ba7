"""The global model as a walk-forward contender beside a finished per-coin walk-forward, same folds.

Usage: .venv/bin/python studies/global_model.py --per-coin RUN_DIR [RUN_DIR ...]
       [--data-dir DIR] [--out DIR]

Each ``RUN_DIR`` is a finished ``run_walkforward`` of one coin (its ``plan.json``, ``folds.csv``
and per-fold ``predictions.parquet``; e.g. ``btc_context.py``'s per-coin runs). Its training
config and fold spec are reused unchanged, plus ``coins: [BTC, ETH, SOL]``, for one
``run_global_walkforward`` (no Ray): one network per fold trained on all three coins' windows
(the same ``max_train_windows`` per epoch as each per-coin model, so the same training budget),
scored per coin. Per coin it prints both contenders' pooled test accuracy with its
CI (``metrics.mean_interval``), the edge over each fold's best baseline (chosen on that fold's validation
split) with its paired CI, and the paired difference global minus per-coin on the test rows both
scored. The folds must be the same (checked: same test periods).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ohlcv"
COINS = ["BTC", "ETH", "SOL"]


def describe(summary: dict) -> str:
    pooled, edge = summary["pooled"], summary["pooled_edge"]
    low, high = pooled["accuracy_ci"]
    text = f"n={pooled['n']:,}  acc {pooled['accuracy']:.4f} [{low:.4f}, {high:.4f}]"
    if edge.get("edge") is not None:
        text += f"  edge {edge['edge']:+.4f} [{edge['ci_low']:+.4f}, {edge['ci_high']:+.4f}] vs best baseline"
    return text


def pooled_predictions(run_dir: Path) -> pd.DataFrame:
    folds = pd.read_csv(run_dir / "folds.csv")
    frames = [
        pd.read_parquet(run_dir / "folds" / str(fold) / "evaluation" / "predictions.parquet")
        for fold in folds.loc[folds["status"] == "ok", "fold"]
    ]
    return pd.concat(frames, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-coin", type=Path, nargs="+", required=True, help="finished per-coin run dirs")
    parser.add_argument("--data-dir", type=Path, default=SHARED)
    parser.add_argument(
        "--out", type=Path, default=Path("runs") / f"study-global-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    args = parser.parse_args()

    import torch

    from crpbot.config import TrainConfig, config_keys
    from crpbot.data.folds import FoldSpec
    from crpbot.evaluation.metrics import paired_interval, predicted_up
    from crpbot.experiments.walkforward_global import run_global_walkforward

    torch.set_num_threads(1)
    plans = {run: json.loads((run / "plan.json").read_text()) for run in args.per_coin}
    first = next(iter(plans.values()))
    if any(
        plan["train_config"] != first["train_config"] or plan["spec"] != first["spec"]
        for plan in plans.values()
    ):
        raise SystemExit("the per-coin runs differ in config or fold spec")
    # keys of other branches' features, switched off in these runs, are not this branch's keys
    extra = {key: value for key, value in first["train_config"].items() if key not in config_keys()}
    if any(value not in (False, [], "all") for value in extra.values()):
        raise SystemExit(f"the per-coin runs use features this global model lacks: {extra}")
    known = {key: value for key, value in first["train_config"].items() if key in config_keys()}
    config = TrainConfig.from_dict(known).replace(coins=COINS)
    spec = FoldSpec(**first["spec"])
    print(
        f"machine: {platform.node()}, {platform.processor() or platform.machine()}; model: {config.cell} "
        f"hidden {config.hidden_size} x{config.num_layers} (bidirectional {config.bidirectional}), lookback "
        f"{config.lookback}, {config.max_epochs} epochs of {config.max_train_windows} windows, "
        f"coin embedding {config.coin_embedding}; {spec.folds} {spec.window} folds of train/val/test "
        f"{spec.train_days:g}/"
        f"{spec.val_days:g}/{spec.test_days:g} days; data {args.data_dir}"
    )
    started = time.perf_counter()
    results = run_global_walkforward(
        config, spec, out_dir=args.out, data_dir=args.data_dir, log=lambda _: None
    )
    print(f"global walk-forward: {time.perf_counter() - started:.0f} s")
    horizon = config.horizon
    for run, plan in plans.items():
        coin = plan["coin"]
        mine = results[coin]
        theirs = pd.read_csv(run / "folds.csv")
        if list(theirs["test_start"]) != list(mine.folds["test_start"]):
            raise SystemExit(f"{coin}: the global folds are not the per-coin run's folds")
        per_coin_summary = json.loads((run / "summary.json").read_text())
        both = pooled_predictions(run).merge(
            pooled_predictions(mine.out_dir), on="timestamp", suffixes=("_per_coin", "_global")
        )
        labels = both["label_per_coin"].to_numpy() == 1
        right_global = (predicted_up(both["prob_up_global"].to_numpy()) == labels).astype(np.float64)
        right_per_coin = (predicted_up(both["prob_up_per_coin"].to_numpy()) == labels).astype(np.float64)
        paired = paired_interval(right_global, right_per_coin, horizon=horizon)
        print(f"{coin} per-coin: {describe(per_coin_summary)}")
        print(f"{coin} global:   {describe(mine.summary)}")
        print(
            f"{coin} global - per-coin on the same {len(both):,} test rows: "
            f"{right_global.mean() - right_per_coin.mean():+.4f} [{paired.low:+.4f}, {paired.high:+.4f}]"
        )


if __name__ == "__main__":
    main()
