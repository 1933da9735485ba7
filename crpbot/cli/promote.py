"""``crpbot promote``: copy a verified model artifact into the registry and make it current.

Usage: crpbot promote --model DIR --coin BTC [--version V] [--registry models]
       [--bucket B [--prefix crpbot] [--endpoint-url URL]]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from crpbot.cli.options import add_coin, add_tracking


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="model or ensemble artifact directory")
    add_coin(parser, "the model is for")
    parser.add_argument("--version", help="version name (default: v<UTC time>-<content digest>)")
    parser.add_argument(
        "--registry", type=Path, default=Path("models"), help="registry root (default: models)"
    )
    parser.add_argument("--bucket", help="also push the coin's versions and pointer to this S3 bucket")
    parser.add_argument("--prefix", default="crpbot", help="S3 key prefix (default: crpbot)")
    parser.add_argument("--endpoint-url", help="S3 endpoint (MinIO, moto); default: AWS or $AWS_ENDPOINT_URL")
    add_tracking(parser)


def run(args: argparse.Namespace) -> int:
    from crpbot.integrations.tracking import mirror_champion, open_tracker
    from crpbot.registry.local import promote
    from crpbot.registry.transfer import push

    promoted = promote(args.model, args.coin, root=args.registry, version=args.version)
    state = "promoted" if promoted.new else "already promoted, now current:"
    print(f"{promoted.coin} {state} {promoted.version} ({promoted.path})")
    mirror_champion(open_tracker(args, None), promoted.coin, args.registry)
    if args.bucket:
        for pushed in push(
            args.registry, args.bucket, coin=promoted.coin, prefix=args.prefix, endpoint_url=args.endpoint_url
        ):
            where = "uploaded to" if pushed.uploaded else "already at"
            print(f"{pushed.coin} {pushed.version} {where} {pushed.url}")
    return 0
