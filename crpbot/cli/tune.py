"""``crpbot tune``: the fallback hyperparameter search (Ray Tune + Optuna TPE + ASHA).

Usage: crpbot tune --coin BTC [--config tune_configs/fallback_search.yaml] [--num-samples N]
       [--epochs N] [--storage PATH|s3://bucket/prefix] [--name NAME] [--resume] [--address ADDR]
       [--gpu] [--input FILE | --data-dir DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from crpbot.cli.options import add_address, add_coin, add_input, add_tracking
from crpbot.config import CONFIG_DIR

DEFAULT_SPACE = CONFIG_DIR / "fallback_search.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_coin(parser, "to search on")
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_SPACE,
        help="search-space YAML (default: tune_configs/fallback_search.yaml)",
    )
    parser.add_argument("--num-samples", type=int, help="override budget.num_samples (trials)")
    parser.add_argument("--epochs", type=int, help="override budget.max_epochs per trial")
    parser.add_argument(
        "--storage",
        help="experiment state: a local directory (default runs/) or "
        "s3://bucket/prefix (AWS_ENDPOINT_URL etc. from the environment)",
    )
    parser.add_argument("--name", help="experiment name (default: tune-<COIN>-<space file name>)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted search NAME without re-running finished trials",
    )
    add_address(parser)
    parser.add_argument("--gpu", action="store_true", help="one GPU per trial instead of one CPU")
    add_input(parser)
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="for a space with a global model: DIR/<COIN>-USD_1m.parquet per coin (default: bundled samples)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="where results.csv and best.yaml go (default: the experiment directory, or runs/<name> for s3)",
    )
    add_tracking(parser)


def run(args: argparse.Namespace) -> int:
    from crpbot.integrations.tracking import absorb_callbacks, open_tracker, record_search, tune_callbacks
    from crpbot.search.space import load_search_space
    from crpbot.search.tune import run_search

    space = load_search_space(args.config)
    tracker = open_tracker(args, "tune")
    name = f"tune {args.name or args.coin} ({args.config.name})" + (" resumed" if args.resume else "")
    with tracker.run(name, tags={"crpbot.space": args.config.resolve()}) as run_id:
        # a resumed search's trials stay under its first parent run: Tune restores its callbacks
        callbacks = [] if args.resume else tune_callbacks(tracker, run_id)
        result = run_search(
            space,
            args.coin,
            input_path=args.input,
            data_dir=args.data_dir,
            num_samples=args.num_samples,
            max_epochs=args.epochs,
            storage=args.storage,
            name=args.name,
            resume=args.resume,
            address=args.address,
            use_gpu=args.gpu,
            output_dir=args.out,
            callbacks=callbacks,
        )
        absorb_callbacks(tracker, callbacks)
        record_search(tracker, run_id, result, args.coin, args.input)
    return 0
