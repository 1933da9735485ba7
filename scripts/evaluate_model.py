"""Evaluate a trained model with the recipe's flags: a thin wrapper around ``crpbot evaluate``.

Usage:
    python scripts/evaluate_model.py --model models/BTC-USD/20250101-120000 --symbol BTC-USD \\
        --model-type lstm --min-accuracy 0.68 --max-calibration-error 0.05 \\
        [--input FILE] [--fee-bps 10] [--out DIR]

--symbol and --model-type are checked against the artifact's config (a mismatch is an error, so
a BTC report is never produced from an ETH model by a typo). Exit status as ``crpbot evaluate``:
0 whether or not the gate passes, 2 on errors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crpbot.cli import evaluate as evaluate_cli
from crpbot.errors import CrpbotError


def check_artifact_matches(model_dir: Path, symbol: str, model_type: str) -> None:
    """Refuse a model whose coin or cell differs from what the caller names."""
    from crpbot.data.bars import normalize_coin
    from crpbot.registry.artifact import read_artifact_json

    config_json = read_artifact_json(model_dir, "config.json")
    coin = config_json.get("coin")
    cell = config_json.get("train_config", {}).get("cell")
    if normalize_coin(symbol) != coin:
        raise CrpbotError(f"--symbol {symbol} does not match the model's coin {coin}")
    if model_type.lower() != cell:
        raise CrpbotError(f"--model-type {model_type} does not match the model's cell {cell}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=evaluate_cli.EPILOG)
    evaluate_cli.add_arguments(parser)
    parser.add_argument("--symbol", required=True, help="coin the model must be for, e.g. BTC-USD")
    parser.add_argument(
        "--model-type", required=True, choices=["lstm", "gru"], help="cell the model must use"
    )
    args = parser.parse_args(argv)
    try:
        check_artifact_matches(args.model, args.symbol, args.model_type)
        return evaluate_cli.run(args)
    except CrpbotError as exc:
        print(f"evaluate_model: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
