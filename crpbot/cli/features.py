"""``crpbot features``: validate a coin's bars and write its feature table as Parquet.

Usage: crpbot features --coin BTC [--input FILE] [--out FILE] [--config FILE]

The table has ``timestamp`` plus one column per feature; warm-up rows (features not
yet defined) are left out, and the feature manifest is stored in the file metadata.
With ``--config``, the config's ``timeframes`` add their ``tf{k}_<feature>`` columns (the last
closed k-minute bar's features, as the model trained on that config reads them).
The file is written to a temporary name and renamed, so a failure never leaves a
half-written table in place of a good one; an output that cannot be a file, or that
is the input itself, is refused before any work.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_OUT = "data/features/features_{coin}_1m_latest.parquet"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--coin", default="BTC", help="BTC, ETH or SOL (or BTC-USD style); default BTC")
    parser.add_argument(
        "--input",
        type=Path,
        default=None,
        help="Parquet, CSV or freqtrade .feather/.json of 1-minute bars (default: the coin's bundled sample)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help=f"output Parquet (default: {DEFAULT_OUT.format(coin='<COIN>')})",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="a training config whose timeframes add their tf{k}_ columns (default: 1-minute features only)",
    )


def run(args: argparse.Namespace) -> int:
    import contextlib
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from crpbot.config import load_config
    from crpbot.data.bars import default_input, load_bars, normalize_coin
    from crpbot.data.dataset import no_defined_rows_error
    from crpbot.data.timeframes import artifact_manifest, feature_table
    from crpbot.errors import CrpbotError

    coin = normalize_coin(args.coin)
    source = args.input if args.input is not None else default_input(coin)
    if args.out == "":
        raise CrpbotError("--out is empty: give the path of the Parquet file to write")
    out = Path(args.out) if args.out is not None else Path(DEFAULT_OUT.format(coin=coin))
    _check_output(out, source)
    timeframes = load_config(args.config).timeframes if args.config is not None else []
    bars = load_bars(source)
    table = feature_table(bars, timeframes)
    features = len(table.columns)
    table.insert(0, "timestamp", bars.frame["timestamp"])
    table = table.dropna().reset_index(drop=True)
    if table.empty:  # an empty table would replace a good one and fail later, far from the cause
        raise no_defined_rows_error(bars)
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    metadata = {
        **(arrow.schema.metadata or {}),
        b"crpbot.feature_manifest": json.dumps(artifact_manifest(timeframes)).encode(),
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
        with contextlib.suppress(OSError):  # a failed clean-up must not hide why the write failed
            partial.unlink(missing_ok=True)
    print(f"{coin}: {bars.source}")
    for line in bars.report.lines():
        print(f"  {line}")
    print(
        f"wrote {len(table):,} rows x {features} features "
        f"({len(bars) - len(table):,} warm-up rows dropped) to {out}"
    )
    return 0


def _check_output(out: Path, source: Path) -> None:
    """Refuse an output that cannot become a file, or that is the input (the bars would be lost)."""
    from crpbot.errors import CrpbotError

    if out.is_dir():
        raise CrpbotError(f"cannot write {out}: it is a directory (give a file path)")
    parent = next((p for p in out.parents if p.exists()), None)  # the first one that exists
    if parent is not None and not parent.is_dir():
        raise CrpbotError(f"cannot write {out}: {parent} is not a directory")
    if out.exists() and source.exists() and os.path.samefile(out, source):
        raise CrpbotError(f"--out {out} is the input file: writing features there would destroy the bars")
