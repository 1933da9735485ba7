"""``crpbot retrain``: per coin, a challenger trained on new bars replaces the champion only if it earns it.

Usage: crpbot retrain --input-dir DIR [--coins BTC,ETH,SOL] [--budget smoke|full|gpu|gbdt-smoke|gbdt]
       [--address ADDR] [--gpu] [--run-dir DIR] [--storage PATH|s3://...] [--registry DIR]
       [--bucket B [--prefix P] [--endpoint-url URL]] [--net-pnl require|report]
       [--promote-unjudged]

Exit status 0 whatever the decisions (a kept champion is a result); non-zero only for errors.
Every decision is in the coin's history: crpbot registry history COIN. A challenger that cannot
be compared with its champion keeps the champion unless --promote-unjudged is given.
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
    from crpbot.pipeline.retrain import PROMOTE_UNJUDGED_FLAG

    parser.add_argument("--coins", default="BTC,ETH,SOL", help="comma-separated coins (default BTC,ETH,SOL)")
    parser.add_argument(
        "--input-dir",
        type=Path,
        required=True,
        help="directory with <COIN>-USD_1m.parquet: the bars to train the challengers on, newest last",
    )
    parser.add_argument(
        "--budget", choices=sorted(BUDGETS), default="smoke", help="as for crpbot pipeline (default smoke)"
    )
    add_address(parser)
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker / trial / ensemble member")
    parser.add_argument(
        "--workers", type=int, default=1, help="Ray Train workers for the recipe run (default 1)"
    )
    parser.add_argument("--run-dir", type=Path, help="where this run writes (default runs/retrain-<time>)")
    parser.add_argument("--storage", help="Ray Train/Tune run state: a path or s3://bucket/prefix")
    parser.add_argument(
        "--registry", type=Path, default=Path("models"), help="registry with the champions (default models/)"
    )
    parser.add_argument("--bucket", help="push each coin's registry and history to this S3 bucket")
    parser.add_argument("--prefix", default="crpbot", help="key prefix in the bucket (default crpbot)")
    parser.add_argument("--endpoint-url", help="S3 endpoint (MinIO, moto); default: AWS, or AWS_ENDPOINT_URL")
    parser.add_argument(
        PROMOTE_UNJUDGED_FLAG,
        dest="promote_unjudged",
        action="store_true",
        help="promote a challenger that passes the gate even when it cannot be compared with the champion "
        "(no shared unseen rows, another target, horizon or features, older input, a failed comparison); "
        "default: the champion stays",
    )
    add_gate_and_costs(parser, quorum=False)
    add_tracking(parser)


def run(args: argparse.Namespace) -> int:
    from crpbot.integrations.tracking import open_tracker, record_retrain
    from crpbot.pipeline.retrain import run_retrain

    coins = coin_list(args.coins)
    tracker = open_tracker(args, "retrain")
    with tracker.run(f"retrain {','.join(coins)} ({args.budget})") as run_id:
        decisions = run_retrain(
            coins,
            input_dir=args.input_dir,
            budget=args.budget,
            cluster=cluster_settings(args),
            thresholds=gate_thresholds(args),
            costs=backtest_costs(args),
            run_dir=args.run_dir,
            registry_root=args.registry,
            storage=args.storage,
            bucket=args.bucket,
            prefix=args.prefix,
            endpoint_url=args.endpoint_url,
            promote_unjudged=args.promote_unjudged,
        )
        record_retrain(tracker, run_id, decisions, args.run_dir, args.registry)
    return 0
