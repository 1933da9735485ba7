"""``crpbot registry``: list, show and roll back promoted models, their history; push to and pull from S3.

Usage: crpbot registry list [--coin BTC]
       crpbot registry show COIN [VERSION]
       crpbot registry rollback COIN VERSION
       crpbot registry history COIN [--json]
       crpbot registry push [--coin BTC] --bucket B [--prefix P] [--endpoint-url URL]
       crpbot registry pull [--coin BTC [--version V [--digest D]]] --bucket B [--prefix P]
                            [--endpoint-url URL]
Every form takes --registry DIR (default: models). S3 credentials come from boto3's default
chain (environment, profile, instance role).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from crpbot.cli.options import add_tracking


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="promoted versions, current marked with *")
    listing.add_argument("--coin", help="only this coin")

    show = actions.add_parser("show", help="verify and describe one version (default: current)")
    show.add_argument("coin")
    show.add_argument("version", nargs="?")

    rollback = actions.add_parser("rollback", help="point current at an earlier version")
    rollback.add_argument("coin")
    rollback.add_argument("version")
    add_tracking(rollback)

    history = actions.add_parser("history", help="the coin's promotions, rollbacks and retrain decisions")
    history.add_argument("coin")
    history.add_argument("--json", action="store_true", help="the records as JSON lines, as stored")

    for name, help_text in (
        ("push", "upload versions and current pointers to S3, verified"),
        ("pull", "download a version (default: remote current) from S3, verified"),
    ):
        transfer = actions.add_parser(name, help=help_text)
        transfer.add_argument("--coin", help="only this coin (default: all)")
        if name == "pull":
            transfer.add_argument(
                "--version", help="this version instead of the remote current (needs --coin)"
            )
            transfer.add_argument(
                "--digest",
                help="the version's content digest (>= 12 hex digits; `registry show` on the machine that "
                "pushed it): a named version must match it, or a digest this registry recorded",
            )
        transfer.add_argument("--bucket", required=True)
        transfer.add_argument("--prefix", default="crpbot", help="S3 key prefix (default: crpbot)")
        transfer.add_argument(
            "--endpoint-url", help="S3 endpoint (MinIO, moto); default: AWS or $AWS_ENDPOINT_URL"
        )

    for action in actions.choices.values():
        action.add_argument(
            "--registry", type=Path, default=Path("models"), help="registry root (default: models)"
        )


def run(args: argparse.Namespace) -> int:
    from crpbot.registry import local, transfer

    if args.action == "list":
        rows = local.list_versions(
            args.registry, coin=args.coin, log=lambda line: print(line, file=sys.stderr)
        )
        if not rows:
            print(f"no promoted models in {args.registry / local.PROMOTED_DIR}")
        for row in rows:
            print(
                f"{'*' if row.current else ' '} {row.coin:8} {row.version:32} {row.kind:8} "
                f"digest {row.digest[:12]}  built {row.created_at}"
            )
    elif args.action == "show":
        print(json.dumps(local.show(args.coin, args.version, root=args.registry), indent=2))
    elif args.action == "rollback":
        restored = local.rollback(args.coin, args.version, root=args.registry)
        print(f"{restored.coin} current -> {restored.version}")
        from crpbot.integrations.tracking import mirror_champion, open_tracker

        mirror_champion(open_tracker(args, None), restored.coin, args.registry)
    elif args.action == "history":
        from crpbot.registry.history import describe, read_history

        records = read_history(args.coin, root=args.registry)
        if not records:
            print(f"no history for {args.coin} in {args.registry / local.PROMOTED_DIR}")
        for record in records:
            print(json.dumps(record) if args.json else describe(record))
    elif args.action == "push":
        for pushed in transfer.push(
            args.registry, args.bucket, coin=args.coin, prefix=args.prefix, endpoint_url=args.endpoint_url
        ):
            where = "uploaded to" if pushed.uploaded else "already at"
            print(f"{pushed.coin} {pushed.version} {where} {pushed.url}")
    else:
        for pulled in transfer.pull(
            args.registry,
            args.bucket,
            coin=args.coin,
            version=args.version,
            digest=args.digest,
            prefix=args.prefix,
            endpoint_url=args.endpoint_url,
        ):
            where = "pulled into" if pulled.new else "already in"
            print(f"{pulled.coin} {pulled.version} {where} {pulled.path}")
    return 0
