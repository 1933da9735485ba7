"""Options that several subcommands share, spelled and explained once."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        help="Ray cluster to join ('auto', host:port, ray://...); "
        "default: start a local instance sized to this machine",
    )


def add_input(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", type=Path, help="1-minute OHLCV Parquet file (default: bundled sample)")
