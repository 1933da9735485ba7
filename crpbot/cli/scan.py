"""``crpbot scan``: walk-forward every cell of a grid on Ray; SPA, StepM and DSR say whether the best is
more than luck; a survivor is confirmed once on a final period nothing else has read.

Usage: crpbot scan --grid FILE [--coins BTC,ETH,SOL] [--input-dir DIR] [--budget smoke|cpu|gpu]
       [--holdout-days D] [--folds N] [--out DIR] [--ledger FILE] [--reuse-final] [--reps 1000]
       [--address ADDR] [--gpu [--gpu-share F]] [gate and cost options]

Rerunning with the same --out skips finished folds (and a finished confirmation).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from crpbot.cli.options import (
    add_address,
    add_gate_and_costs,
    add_tracking,
    backtest_costs,
    cluster_settings,
    coin_list,
    gate_thresholds,
)

EPILOG = (
    "Exit status: 0 when every cell finished (whatever the tests and the gate said), 1 when a cell "
    "failed or a confirmation was refused (rerun with the same --out), 2 on errors."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument(
        "--grid", type=Path, required=True, help="scan grid YAML (e.g. tune_configs/scan.yaml)"
    )
    parser.add_argument("--coins", default="BTC,ETH,SOL", help="comma-separated coins (default BTC,ETH,SOL)")
    parser.add_argument(
        "--input-dir", type=Path, help="directory of <COIN>-USD_1m.parquet files (default: bundled sample)"
    )
    parser.add_argument(
        "--budget",
        choices=("smoke", "cpu", "gpu"),
        help="fold geometry and rnn training (default: the grid's)",
    )
    parser.add_argument(
        "--holdout-days",
        type=float,
        help="final period: the last D days of bars of each coin (default: 3 with smoke, else 30)",
    )
    parser.add_argument("--folds", type=int, help="keep the last N folds (default: the budget's)")
    parser.add_argument(
        "--out", type=Path, help="output directory (default: runs/scan-<timestamp>); reused to resume"
    )
    parser.add_argument(
        "--ledger",
        type=Path,
        help="record of final periods used by confirmations (default: $CRPBOT_FINAL_LEDGER or "
        "~/.crpbot/final_periods.jsonl)",
    )
    parser.add_argument(
        "--reuse-final",
        action="store_true",
        help="confirm on a final period a confirmation has already scored (the report says so first)",
    )
    parser.add_argument(
        "--reps", type=int, default=1000, help="bootstrap replications of SPA and StepM (default 1000)"
    )
    add_address(parser)
    parser.add_argument(
        "--gpu", action="store_true", help="a GPU share per fold; an error when none is visible"
    )
    parser.add_argument(
        "--gpu-share", type=float, default=1.0, help="with --gpu: fraction of a GPU per fold (default 1)"
    )
    add_gate_and_costs(parser, quorum=False)
    add_tracking(parser)


def run(args: argparse.Namespace) -> int:
    from crpbot.experiments.scan import run_scan
    from crpbot.experiments.scan_grid import load_scan_grid
    from crpbot.integrations.tracking import open_tracker, record_scan

    result = run_scan(
        load_scan_grid(args.grid),
        coin_list(args.coins),
        input_dir=args.input_dir,
        budget=args.budget,
        holdout_days=args.holdout_days,
        folds=args.folds,
        out_dir=args.out,
        cluster=cluster_settings(args),
        thresholds=gate_thresholds(args),
        costs=backtest_costs(args),
        ledger=args.ledger,
        reuse_final=args.reuse_final,
        reps=args.reps,
    )
    record_scan(open_tracker(args, "scan"), result.out_dir, name=f"scan {args.coins} ({args.grid.name})")
    return 1 if result.failed else 0
