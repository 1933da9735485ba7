"""``crpbot features``: validate a coin's bars and write its feature table as Parquet.

Usage: crpbot features --coin BTC [--input FILE] [--out FILE]

The table has ``timestamp`` plus one column per feature; warm-up rows (features not
yet defined) are left out, and the feature manifest is stored in the file metadata.
The file is written to a temporary name and renamed, so a failure never leaves a
half-written table in place of a good one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_OUT = "data/features/features_{coin}_1m_latest.parquet"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--coin", default="BTC", help="BTC, ETH or SOL (or BTC-USD style); default BTC")
    parser.add_argument(
        "--input",
        type=Path,
        default=None,
        help="Parquet or CSV of 1-minute bars (default: the bundled sample of the coin)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"output Parquet (default: {DEFAULT_OUT.format(coin='<COIN>')})",
    )


def run(args: argparse.Namespace) -> int:
    import json
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    from crpbot.data import default_input, load_bars, normalize_coin
    from crpbot.errors import CrpbotError
    from crpbot.features import FEATURE_NAMES, compute_features, feature_manifest

    coin = normalize_coin(args.coin)
    bars = load_bars(args.input if args.input is not None else default_input(coin))
    table = compute_features(bars)
    table.insert(0, "timestamp", bars.frame["timestamp"])
    table = table.dropna().reset_index(drop=True)
    out = args.out if args.out is not None else Path(DEFAULT_OUT.format(coin=coin))
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    metadata = {
        **(arrow.schema.metadata or {}),
        b"crpbot.feature_manifest": json.dumps(feature_manifest()).encode(),
        b"crpbot.source_fingerprint": bars.fingerprint.encode(),
    }
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(arrow.replace_schema_metadata(metadata), partial, compression="zstd")
        os.replace(partial, out)
    except OSError as exc:
        raise CrpbotError(f"cannot write {out}: {exc.strerror or exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    print(f"{coin}: {bars.source}")
    for line in bars.report.lines():
        print(f"  {line}")
    print(
        f"wrote {len(table):,} rows x {len(FEATURE_NAMES)} features "
        f"({len(bars) - len(table):,} warm-up rows dropped) to {out}"
    )
    return 0
