"""``crpbot walkforward``: retrain a config fold after fold on Ray and score each fold on its own test period.

Usage: crpbot walkforward --coin BTC [--config FILE] [--set KEY=VALUE ...] [--input FILE]
       [--train-days 180] [--val-days 14] [--test-days 14] [--step-days 14]
       [--window rolling|expanding] [--folds N] [--address ADDR]
       [--gpu [--gpu-share F]] [--out DIR] [--min-accuracy 0.68] [--max-calibration-error 0.05]
       [--gate-on ci-lower|point] [--ece max|equal-width|equal-mass] [--net-pnl require|report]
       [--fee-bps 10] [--slippage-bps 0] [--entry-delay-bars 1]

A day is 1,440 one-minute bars of data present. Rerunning with the same --out skips finished folds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from crpbot.cli.options import (
    add_address,
    add_coin,
    add_config_settings,
    add_gate_and_costs,
    add_input,
    add_tracking,
    backtest_costs,
    cluster_settings,
    config_with_settings,
    gate_thresholds,
)
from crpbot.cli.train import DEFAULT_CONFIG

EPILOG = (
    "Exit status: 0 when every fold finished (whatever the gate said), 1 when a fold failed "
    "(the others are written; rerun with the same --out to retry it), 2 on errors."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    add_coin(parser, "to walk forward on")
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="training config YAML (default: tune_configs/default.yaml)",
    )
    add_config_settings(parser)
    add_input(parser)
    parser.add_argument("--train-days", type=float, default=180.0, help="train period per fold (default 180)")
    parser.add_argument(
        "--val-days", type=float, default=14.0, help="validation period per fold (default 14)"
    )
    parser.add_argument("--test-days", type=float, default=14.0, help="test period per fold (default 14)")
    parser.add_argument(
        "--step-days",
        type=float,
        help="how far each fold moves (default and only allowed value: --test-days, so test periods tile)",
    )
    parser.add_argument(
        "--window",
        default="rolling",
        help="rolling: train period of fixed length; expanding: train from the first bar (default rolling)",
    )
    parser.add_argument("--folds", type=int, help="keep the last N folds (default: every fold that fits)")
    add_address(parser)
    parser.add_argument(
        "--gpu", action="store_true", help="a GPU share per fold; an error when none is visible"
    )
    parser.add_argument(
        "--gpu-share", type=float, default=1.0, help="with --gpu: fraction of a GPU per fold (default 1)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="output directory (default: runs/walkforward-<coin>-<timestamp>); reused to resume",
    )
    add_gate_and_costs(parser, quorum=False)
    add_tracking(parser)


def run(args: argparse.Namespace) -> int:
    from crpbot.config import load_config
    from crpbot.data.folds import FoldSpec
    from crpbot.experiments.walkforward import run_walkforward
    from crpbot.integrations.tracking import open_tracker, record_walkforward

    spec = FoldSpec(
        train_days=args.train_days,
        val_days=args.val_days,
        test_days=args.test_days,
        step_days=args.step_days,
        window=args.window,
        folds=args.folds,
    )
    config, cluster, thresholds, costs = (
        config_with_settings(load_config(args.config), args.set),
        cluster_settings(args),
        gate_thresholds(args),
        backtest_costs(args),
    )
    tracker = open_tracker(args, "walkforward")
    with tracker.run(f"walkforward {args.coin}", tags={"crpbot.config": args.config}) as run_id:
        result = run_walkforward(
            config,
            args.coin,
            spec,
            input_path=args.input,
            out_dir=args.out,
            cluster=cluster,
            thresholds=thresholds,
            costs=costs,
        )
        record_walkforward(tracker, run_id, result.out_dir)
    return 0 if not result.summary["folds_failed"] else 1
