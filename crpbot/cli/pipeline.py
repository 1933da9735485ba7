"""``crpbot pipeline``: the whole recipe for several coins, ending in one table and a run report.

Usage: crpbot pipeline [--coins BTC,ETH,SOL] [--budget smoke|full|gpu|gbdt-smoke|gbdt] [--address ADDR]
       [--gpu] [--input-dir DIR] [--run-dir DIR] [--storage PATH|s3://...] [--registry DIR]
       [--bucket B [--prefix P] [--endpoint-url URL]] [--gate-on ci-lower|point]
       [--ece max|equal-width|equal-mass] [--net-pnl require|report] [--fee-bps 10] [--slippage-bps 0]
       [--entry-delay-bars 1] [--verbose]

While the coins run it shows one progress row per coin (plain lines when not on a terminal) and
ends with the table; every worker's output goes to <run-dir>/pipeline.log (--verbose: to the
terminal as well, as it comes). Exit status 0 whether or not the batch is promoted (a refusal is
a result, printed with its reasons); non-zero only for errors.
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from crpbot.pipeline.chain import BUDGETS

    parser.add_argument("--coins", default="BTC,ETH,SOL", help="comma-separated coins (default BTC,ETH,SOL)")
    parser.add_argument(
        "--budget",
        choices=sorted(BUDGETS),
        default="smoke",
        help="smoke: tiny models in minutes on a laptop; full: the recipe and the full "
        "fallback search (GPU cluster); gpu: full at batch 512 with trials and seeds packed 4 per GPU; "
        "gbdt-smoke / gbdt: the LightGBM recipe (tune_configs/gbdt.yaml), a 4- / 20-trial search of its "
        "space and 2 / 5 seeds, on CPUs",
    )
    add_address(parser)
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker / trial / ensemble member")
    parser.add_argument(
        "--workers", type=int, default=1, help="Ray Train workers for the recipe run (default 1)"
    )
    parser.add_argument(
        "--input-dir",
        type=Path,
        help="directory with <COIN>-USD_1m.parquet or freqtrade <COIN>_USDT-1m.feather/.json files "
        "(default: bundled sample)",
    )
    parser.add_argument("--run-dir", type=Path, help="where this run writes (default runs/pipeline-<time>)")
    parser.add_argument(
        "--storage",
        help="Ray Train/Tune run state: a path or s3://bucket/prefix "
        "(default: inside --run-dir; shared storage on a multi-node cluster)",
    )
    parser.add_argument(
        "--registry", type=Path, default=Path("models"), help="local model registry root (default models/)"
    )
    parser.add_argument("--bucket", help="also push promoted models to this S3 bucket")
    parser.add_argument("--prefix", default="crpbot", help="key prefix in the bucket (default crpbot)")
    parser.add_argument("--endpoint-url", help="S3 endpoint (MinIO, moto); default: AWS, or AWS_ENDPOINT_URL")
    add_gate_and_costs(parser, quorum=True)
    add_tracking(parser)
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="stream every worker's output (Ray Train, Tune, the chains) as it comes, instead of a "
        "progress row per coin; it goes to <run-dir>/pipeline.log either way",
    )


def run(args: argparse.Namespace) -> int:
    from crpbot.integrations.tracking import open_tracker, record_pipeline
    from crpbot.pipeline.run import run_pipeline

    coins = coin_list(args.coins)
    tracker = open_tracker(args, "pipeline")
    with tracker.run(f"pipeline {','.join(coins)} ({args.budget})") as run_id:
        result = run_pipeline(
            coins,
            budget=args.budget,
            cluster=cluster_settings(args),
            thresholds=gate_thresholds(args),
            costs=backtest_costs(args),
            input_dir=args.input_dir,
            run_dir=args.run_dir,
            registry_root=args.registry,
            storage=args.storage,
            bucket=args.bucket,
            prefix=args.prefix,
            endpoint_url=args.endpoint_url,
            verbose=args.verbose,
        )
        record_pipeline(tracker, run_id, result, args.registry)
    return 0
