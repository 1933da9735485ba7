"""``crpbot ensemble``: train one config under K seeds in parallel on Ray, calibrate on validation.

Usage: crpbot ensemble --coin BTC [--config best.yaml] [--set KEY=VALUE ...] [--seeds 5] [--epochs N]
       [--gpu [--gpu-share F]] [--address ADDR] [--input FILE] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from crpbot.cli.options import (
    add_address,
    add_coin,
    add_config_settings,
    add_input,
    add_tracking,
    config_with_settings,
)
from crpbot.cli.train import DEFAULT_CONFIG


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_coin(parser, "to train on")
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="training config YAML, e.g. a search's best config (default: tune_configs/default.yaml)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=5,
        help="number of members, seeds config.seed .. config.seed+K-1 (default 5)",
    )
    add_config_settings(parser)
    parser.add_argument("--epochs", type=int, help="override max_epochs of the config")
    parser.add_argument(
        "--gpu", action="store_true", help="one GPU per member; an error when none is visible"
    )
    parser.add_argument(
        "--gpu-share",
        type=float,
        default=1.0,
        help="with --gpu: fraction of a GPU per member (default 1; 0.25 trains 4 seeds per GPU at once)",
    )
    add_address(parser)
    add_input(parser)
    parser.add_argument(
        "--out", type=Path, help="artifact directory (default: models/<coin>/ensemble-<timestamp>)"
    )
    add_tracking(parser)


def run(args: argparse.Namespace) -> int:
    from crpbot.config import load_config
    from crpbot.errors import CrpbotError
    from crpbot.integrations.tracking import open_tracker, record_model
    from crpbot.model.ensemble import train_ensemble

    if args.seeds < 1:
        raise CrpbotError(f"invalid --seeds {args.seeds}: must be >= 1")
    config = config_with_settings(load_config(args.config), args.set)
    if args.epochs is not None:
        config = config.replace(max_epochs=args.epochs)
    tracker = open_tracker(args, "ensemble")
    with tracker.run(f"ensemble {args.coin}", tags={"crpbot.config": args.config}) as run_id:
        artifact = train_ensemble(
            config,
            args.coin,
            seeds=args.seeds,
            input_path=args.input,
            out_dir=args.out,
            address=args.address,
            use_gpu=args.gpu,
            gpu_share=args.gpu_share,
        )
        record_model(tracker, run_id, artifact)
    return 0
