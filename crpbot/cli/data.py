"""``crpbot data``: maintain bar files.

Usage: crpbot data append --coin BTC --from NEW --to DATASET

``append`` merges NEW into DATASET (created when absent): bars still forming (open time +
1 minute > now, UTC) are dropped and never written, identical overlapping bars are dropped, a
conflicting one is refused naming the first conflict, bars filling old gaps are reported per
gap, new gaps are reported, and the write is atomic. Prints the merged file's fingerprint.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from crpbot.cli.options import add_coin


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    append = actions.add_parser(
        "append", help="merge closed new bars into a dataset file (atomic; conflicts refused, gaps reported)"
    )
    add_coin(append, "the bars belong to")
    append.add_argument(
        "--from",
        dest="source",
        type=Path,
        required=True,
        help="new bars (Parquet, CSV, freqtrade .feather/.json)",
    )
    append.add_argument(
        "--to", dest="dataset", type=Path, required=True, help="dataset file to extend (created when absent)"
    )


def run(args: argparse.Namespace) -> int:
    from crpbot.data.append import append_bars

    result = append_bars(args.coin, args.source, args.dataset)
    for line in result.lines():
        print(line)
    return 0
