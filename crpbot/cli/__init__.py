"""The ``crpbot`` command line: one entry point, one module per subcommand.

Each subcommand module defines ``add_arguments(parser)`` and ``run(args) -> int``.
Subcommand modules import Ray and PyTorch inside ``run`` only, so building the
parser (and ``crpbot --help``) stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

import crpbot
from crpbot import __version__
from crpbot.errors import CrpbotError

# subcommand -> (module under crpbot.cli, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("doctor", "check versions, GPUs, a Ray start and a remote task (run it first on a new node)"),
    "features": ("features", "validate bars and write the feature table"),
    "train": ("train", "train one model with Ray Train and write its artifact"),
    "tune": ("tune", "hyperparameter search with Ray Tune, Optuna and ASHA"),
    "ensemble": ("ensemble", "train one config under K seeds on Ray, temperature fitted on validation"),
    "evaluate": ("evaluate", "score a model on its test split: metrics, baselines, backtest, gate, report"),
    "promote": ("promote", "copy a verified model into the registry and make it current"),
    "pipeline": ("pipeline", "train, check, search, ensemble, evaluate and gate several coins; promote"),
    "walkforward": (
        "walkforward",
        "retrain fold after fold on Ray, score each fold on its own test period; pooled CI, report",
    ),
    "scan": (
        "scan",
        "walk-forward a grid of questions on Ray; SPA/StepM/DSR on the best; confirm it on a final period",
    ),
    "registry": ("registry", "list, show, roll back promoted models; push/pull them to/from S3"),
    "data": ("data", "maintain bar files: append new bars to a dataset atomically"),
    "predict": ("predict", "P(up) of a model (default: the promoted one) for the latest closed bars"),
    "retrain": ("retrain", "a challenger per coin on new bars replaces the champion only if it earns it"),
}


class OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, like every other crpbot error.

    argparse prints the whole usage block before the message; the block is ``--help``'s job.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="crpbot", description=crpbot.__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"crpbot {__version__}")
    # nested subparsers (crpbot registry push) default to their parent's class, so they get it too
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=OneLineErrorParser
    )
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(f"crpbot.cli.{module_name}")
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except CrpbotError as exc:
        print(f"crpbot: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("crpbot: interrupted", file=sys.stderr)
        return 130
