"""``crpbot train``: train one model with Ray Train and write its artifact directory.

Usage: crpbot train --coin BTC [--config tune_configs/default.yaml] [--set KEY=VALUE ...] [--epochs N]
       [--workers N] [--gpu] [--address ADDR] [--input FILE] [--out DIR] [--seed S]
       [--storage PATH|s3://bucket/prefix] [--context-input COIN=FILE ...]
       crpbot train --config tune_configs/global.yaml [--data-dir DIR] ...   (one model, several coins)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from crpbot.cli.options import (
    add_address,
    add_coin,
    add_config_settings,
    add_context_input,
    add_input,
    add_tracking,
    config_with_settings,
)
from crpbot.config import CONFIG_DIR

DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_coin(parser, "to train on (none for a global model: its config lists the coins)", required=False)
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="training config YAML (default: tune_configs/default.yaml, the improved recipe)",
    )
    add_config_settings(parser)
    parser.add_argument("--epochs", type=int, help="override max_epochs of the config")
    parser.add_argument("--seed", type=int, help="override seed of the config")
    parser.add_argument("--workers", type=int, default=1, help="data-parallel Ray Train workers (default 1)")
    parser.add_argument(
        "--gpu", action="store_true", help="one GPU per worker; an error when none is visible"
    )
    add_address(parser)
    add_input(parser)
    add_context_input(parser)
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="a global model's bars: DIR/<COIN>-USD_1m.parquet per coin (default: bundled samples)",
    )
    parser.add_argument("--out", type=Path, help="artifact directory (default: models/<coin>/<timestamp>)")
    parser.add_argument(
        "--storage",
        help="Ray Train checkpoint storage: a path or s3://bucket/prefix "
        "(default: runs/train; shared storage on a multi-node cluster)",
    )
    add_tracking(parser)


def run(args: argparse.Namespace) -> int:
    from crpbot.config import load_config
    from crpbot.data.cross_asset import parse_context_inputs
    from crpbot.integrations.tracking import open_tracker, record_model
    from crpbot.model.trainer import train

    config = config_with_settings(load_config(args.config), args.set)
    overrides = {
        key: value for key, value in (("max_epochs", args.epochs), ("seed", args.seed)) if value is not None
    }
    if overrides:
        config = config.replace(**overrides)
    context_inputs = parse_context_inputs(args.context_input)
    tracker = open_tracker(args, "train")
    with tracker.run(f"train {args.coin or 'global'}", tags={"crpbot.config": args.config}) as run_id:
        artifact = train(
            config,
            args.coin,
            input_path=args.input,
            context_inputs=context_inputs,
            data_dir=args.data_dir,
            num_workers=args.workers,
            use_gpu=args.gpu,
            address=args.address,
            out_dir=args.out,
            storage_path=args.storage,
        )
        record_model(tracker, run_id, artifact)
    print(f"Model artifact written to {artifact}")
    return 0
