"""``crpbot predict``: P(up) of a model for the latest closed bars of a file.

Usage: crpbot predict --coin BTC --input BARS [--model DIR | --registry DIR | --bucket B [--prefix P]
       [--endpoint-url URL]] [--last N] [--json] [--max-staleness MIN | --allow-stale]
       [--context-input COIN=FILE ...]

Without --model the coin's current promoted model is used (--registry, default models); with
--bucket the remote current is pulled into that registry and verified first. Bars whose latest
bar closed more than --max-staleness minutes ago (default 5, against the UTC clock) are refused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from crpbot.cli.options import add_coin, add_context_input

EPILOG = (
    "--json prints one object: {coin, version, model, horizon_minutes, target ({name, horizon, "
    "its parameters}: what prob_up is the probability of, label 1), predictions: "
    "[{timestamp (bar open, UTC ISO 8601), prob_up, familiar}, ...]} (oldest first). familiar: "
    "the window lies inside what the model saw in training (false: do not act on it; null: unknown, "
    "the model predates familiarity.json)."
)

FAMILIAR_TEXT = {
    True: "familiar",
    False: "UNFAMILIAR (outside training's features: abstain)",
    None: "familiarity unknown (model predates it)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    add_coin(parser, "to predict")
    parser.add_argument(
        "--input",
        type=Path,
        required=True,
        help="latest 1-minute bars (Parquet, CSV, freqtrade .feather/.json)",
    )
    parser.add_argument("--model", type=Path, help="model or ensemble artifact (default: the promoted one)")
    parser.add_argument("--registry", type=Path, help="registry root of the promoted model (default: models)")
    parser.add_argument("--bucket", help="pull the coin's current promoted model from this S3 bucket first")
    parser.add_argument("--prefix", help="S3 key prefix (default: crpbot)")
    parser.add_argument("--endpoint-url", help="S3 endpoint (MinIO, moto); default: AWS or $AWS_ENDPOINT_URL")
    parser.add_argument("--last", type=int, default=1, help="predict each of the last N bars (default 1)")
    add_context_input(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object (see below)")
    stale = parser.add_mutually_exclusive_group()
    stale.add_argument(
        "--max-staleness",
        type=float,
        default=5.0,
        help="refuse bars whose latest bar closed more than this many minutes ago (default 5)",
    )
    stale.add_argument("--allow-stale", action="store_true", help="predict on old bars (backfills, tests)")


def run(args: argparse.Namespace) -> int:
    import math

    import pandas as pd

    from crpbot.data.bars import load_bars, normalize_coin
    from crpbot.data.cross_asset import load_context, parse_context_inputs
    from crpbot.errors import CrpbotError
    from crpbot.model.serving import LiveModel

    if args.model is not None and (args.registry or args.bucket):
        raise CrpbotError("--model names the artifact; it excludes --registry and --bucket")
    if args.bucket is None and (args.prefix or args.endpoint_url):
        raise CrpbotError("--prefix and --endpoint-url need --bucket")
    if not (math.isfinite(args.max_staleness) and args.max_staleness >= 0):
        raise CrpbotError(f"invalid --max-staleness {args.max_staleness}: minutes >= 0")
    if args.last < 1:
        raise CrpbotError(f"invalid --last {args.last}: must be >= 1")
    bars = load_bars(args.input)
    if args.model is not None:
        model = LiveModel.load(args.model, coin=args.coin)
    else:
        model = LiveModel.promoted(
            args.coin,
            registry=args.registry,
            bucket=args.bucket,
            prefix=args.prefix,
            endpoint_url=args.endpoint_url,
        )
    if model.coin != normalize_coin(args.coin):
        raise CrpbotError(f"the model predicts {model.coin}, not {normalize_coin(args.coin)}")
    limit = None if args.allow_stale else pd.Timedelta(minutes=args.max_staleness)
    # a context model's context bars: --context-input, else <COIN>-USD_1m.parquet beside --input
    context = load_context(model.coin, model.context, args.input, parse_context_inputs(args.context_input))
    predictions = model.predict(
        bars, last=args.last, max_staleness=limit, context=context.bars if context is not None else None
    )
    if args.json:
        print(
            json.dumps(
                {
                    "coin": model.coin,
                    "version": model.version,
                    "model": str(model.predictor.path),
                    "horizon_minutes": model.horizon,
                    "target": model.target.to_dict(),
                    "predictions": [
                        {key: p.to_dict()[key] for key in ("timestamp", "prob_up", "familiar")}
                        for p in predictions
                    ],
                }
            )
        )
    else:
        for p in predictions:
            print(
                f"{p.coin} {p.to_dict()['timestamp']}  {model.target.question()} = {p.prob_up:.4f}  "
                f"{FAMILIAR_TEXT[p.familiar]}  model {p.version}"
            )
    return 0
