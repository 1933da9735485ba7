"""``crpbot doctor``: check that this machine (or a cluster) can run crpbot; the first command on a new node.

Usage: crpbot doctor [--address ADDR]

Prints versions (torch, CUDA, cuDNN, Ray, Optuna, boto3), the GPUs torch sees, starts a local Ray
instance (or joins ``--address``), checks Ray's State API, runs one tiny remote task (on a GPU
when there is one) and stops Ray. Exit status 0 when every check passes, 2 with a one-line
reason otherwise.
"""

from __future__ import annotations

import argparse

from crpbot.cli.options import add_address


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_address(parser)


def run(args: argparse.Namespace) -> int:
    from crpbot.doctor import run_doctor

    run_doctor(args.address)
    return 0
