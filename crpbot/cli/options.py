"""Options that several subcommands share, spelled and explained once."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from crpbot.config import TrainConfig
from crpbot.errors import CrpbotError
from crpbot.evaluation.backtest import (
    DEFAULT_ENTRY_DELAY_BARS,
    DEFAULT_FEE_BPS,
    DEFAULT_SLIPPAGE_BPS,
    Costs,
)
from crpbot.evaluation.gate import (
    DEFAULT_ECE,
    DEFAULT_GATE_ON,
    DEFAULT_MAX_CALIBRATION_ERROR,
    DEFAULT_MIN_ACCURACY,
    DEFAULT_NET_PNL,
    DEFAULT_QUORUM,
    ECE_KINDS,
    GATE_ON,
    NET_PNL_MODES,
    GateThresholds,
)
from crpbot.ray_runtime import ClusterSettings


def add_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        help="Ray cluster to join ('auto', host:port, ray://...); "
        "default: start a local instance sized to this machine",
    )


def add_input(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input",
        type=Path,
        help="1-minute OHLCV file: Parquet, CSV, or freqtrade .feather/.json (default: bundled sample)",
    )


def add_context_input(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--context-input",
        action="append",
        metavar="COIN=FILE",
        help="bars of a context coin (repeatable); default: <COIN>-USD_1m.parquet beside --input, "
        "or for a trained model the files it records",
    )


def add_config_settings(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change one key of the training config (repeatable; VALUE is read as YAML), e.g. "
        "--set target=volatility --set horizon=60",
    )


def config_with_settings(config: TrainConfig, settings: list[str]) -> TrainConfig:
    """``config`` with each ``--set KEY=VALUE`` applied, validated like a config file's keys."""
    changes: dict[str, Any] = {}
    for setting in settings:
        key, sep, text = setting.partition("=")
        if not sep or not key.strip():
            raise CrpbotError(f"--set {setting!r}: expected KEY=VALUE, e.g. target=volatility")
        try:
            changes[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CrpbotError(f"--set {setting!r}: the value is not YAML ({type(exc).__name__})") from exc
    return config.replace(**changes) if changes else config


def add_coin(parser: argparse.ArgumentParser, what: str, *, required: bool = True) -> None:
    parser.add_argument("--coin", required=required, help=f"coin {what}, e.g. BTC or BTC-USD")


def coin_list(text: str) -> list[str]:
    """``--coins BTC,ETH,SOL`` as a list (blank entries ignored; validated where the coins are read)."""
    return [coin.strip() for coin in text.split(",") if coin.strip()]


def cluster_settings(args: argparse.Namespace) -> ClusterSettings:
    """``--address``, ``--gpu`` and, where the command has them, ``--workers`` and ``--gpu-share``
    (the defaults when absent), checked before Ray starts."""
    return ClusterSettings(
        address=args.address,
        gpu=args.gpu,
        workers=getattr(args, "workers", 1),
        gpu_share=getattr(args, "gpu_share", 1.0),
    )


def add_gate_reading(parser: argparse.ArgumentParser) -> None:
    """How the gate reads accuracy, calibration and net return: ``--gate-on``, ``--ece``, ``--net-pnl``."""
    parser.add_argument(
        "--gate-on",
        choices=GATE_ON,
        default=DEFAULT_GATE_ON,
        help="gate: compare min-accuracy with the accuracy's 95%% CI lower bound (ci-lower: no pass "
        f"by luck) or its point estimate (point: the recipe's) (default {DEFAULT_GATE_ON})",
    )
    parser.add_argument(
        "--ece",
        choices=ECE_KINDS,
        default=DEFAULT_ECE,
        help="gate: the calibration error compared with max-calibration-error: 15 equal-width bins (the "
        "recipe's), 15 equal-mass bins, or the larger of the two (default "
        f"{DEFAULT_ECE}; equal-width bins are nearly blind when confidences crowd into 0.50-0.53)",
    )
    parser.add_argument(
        "--net-pnl",
        choices=NET_PNL_MODES,
        default=DEFAULT_NET_PNL,
        help="gate: require the 95%% CI lower bound of the backtest's net return per trade (after fees "
        "and slippage, at the threshold chosen on validation) to be above 0, no trades failing it "
        f"(require), or only report it (report) (default {DEFAULT_NET_PNL})",
    )


def add_gate_and_costs(parser: argparse.ArgumentParser, *, quorum: bool) -> None:
    """The promotion gate's thresholds (defaults: the recipe's), how it reads them (defaults:
    strictly, :func:`add_gate_reading`) and the backtest's fills (:func:`backtest_costs`)."""
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
    add_gate_reading(parser)
    parser.add_argument(
        "--fee-bps",
        type=float,
        default=DEFAULT_FEE_BPS,
        help=f"backtest fee per side in bps (default {DEFAULT_FEE_BPS:g})",
    )
    parser.add_argument(
        "--slippage-bps",
        type=float,
        default=DEFAULT_SLIPPAGE_BPS,
        help=f"backtest slippage per side in bps (default {DEFAULT_SLIPPAGE_BPS:g})",
    )
    parser.add_argument(
        "--entry-delay-bars",
        type=int,
        default=DEFAULT_ENTRY_DELAY_BARS,
        help="backtest: open a position this many bars after the signal's bar (default "
        f"{DEFAULT_ENTRY_DELAY_BARS}: the next bar's close; 0: the signal bar's close, as the recipe)",
    )


def gate_thresholds(args: argparse.Namespace) -> GateThresholds:
    """The thresholds given by :func:`add_gate_and_costs` options (quorum: the default when absent)."""
    return GateThresholds(
        min_accuracy=args.min_accuracy,
        max_calibration_error=args.max_calibration_error,
        quorum=getattr(args, "quorum", DEFAULT_QUORUM),
        gate_on=args.gate_on,
        ece=args.ece,
        net_pnl=args.net_pnl,
    )


def backtest_costs(args: argparse.Namespace) -> Costs:
    """The backtest's fills given by :func:`add_gate_and_costs` options."""
    return Costs(fee_bps=args.fee_bps, slippage_bps=args.slippage_bps, entry_delay_bars=args.entry_delay_bars)


def add_tracking(parser: argparse.ArgumentParser) -> None:
    """Where the run is recorded in MLflow (crpbot.integrations.tracking): ``--tracking-uri``,
    ``--no-tracking``."""
    parser.add_argument(
        "--tracking-uri",
        help="MLflow tracking store for this run, e.g. http://host:5000 (default: $CRPBOT_TRACKING_URI, "
        "else sqlite:///runs/mlflow.db under the working directory; 'off' is --no-tracking)",
    )
    parser.add_argument("--no-tracking", action="store_true", help="do not record this run in MLflow")
