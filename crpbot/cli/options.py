"""Options that several subcommands share, spelled and explained once."""

from __future__ import annotations

import argparse
from pathlib import Path

from crpbot.evaluation.gate import (
    DEFAULT_MAX_CALIBRATION_ERROR,
    DEFAULT_MIN_ACCURACY,
    DEFAULT_QUORUM,
    GateThresholds,
)


def add_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        help="Ray cluster to join ('auto', host:port, ray://...); "
        "default: start a local instance sized to this machine",
    )


def add_input(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", type=Path, help="1-minute OHLCV Parquet file (default: bundled sample)")


def add_coin(parser: argparse.ArgumentParser, what: str, *, required: bool = True) -> None:
    parser.add_argument("--coin", required=required, help=f"coin {what}, e.g. BTC or BTC-USD")


def add_gate_and_costs(parser: argparse.ArgumentParser, *, quorum: bool) -> None:
    """The promotion gate's thresholds (defaults: the recipe's) and the backtest's fee."""
    parser.add_argument(
        "--min-accuracy",
        type=float,
        default=DEFAULT_MIN_ACCURACY,
        help=f"gate: minimum test accuracy per coin (default {DEFAULT_MIN_ACCURACY})",
    )
    parser.add_argument(
        "--max-calibration-error",
        type=float,
        default=DEFAULT_MAX_CALIBRATION_ERROR,
        help=f"gate: maximum ECE per coin (default {DEFAULT_MAX_CALIBRATION_ERROR})",
    )
    if quorum:
        parser.add_argument(
            "--quorum",
            type=int,
            default=DEFAULT_QUORUM,
            help=f"gate: coins that must pass (default {DEFAULT_QUORUM})",
        )
    parser.add_argument(
        "--fee-bps", type=float, default=10.0, help="backtest fee per side in bps (default 10)"
    )


def gate_thresholds(args: argparse.Namespace) -> GateThresholds:
    """The thresholds given by :func:`add_gate_and_costs` options (quorum: the default when absent)."""
    return GateThresholds(
        min_accuracy=args.min_accuracy,
        max_calibration_error=args.max_calibration_error,
        quorum=getattr(args, "quorum", DEFAULT_QUORUM),
    )
