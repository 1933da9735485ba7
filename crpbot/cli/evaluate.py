"""``crpbot evaluate``: score a model or ensemble on its test split and apply the promotion gate.

Usage: crpbot evaluate --model DIR [--coin BTC] [--input FILE] [--min-accuracy 0.68]
       [--max-calibration-error 0.05] [--gate-on ci-lower|point] [--ece max|equal-width|equal-mass]
       [--net-pnl require|report]
       [--fee-bps 10] [--slippage-bps 0] [--entry-delay-bars 1] [--trade-threshold TAU] [--out DIR]
       [--context-input COIN=FILE ...]

Exit status 0 whether or not the gate passes: a failed gate is a result, written to metrics.json
and printed as "Status: FAIL (reasons)". Non-zero (2) only for errors (bad model, bad input).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from crpbot.cli.options import (
    add_coin,
    add_context_input,
    add_gate_and_costs,
    add_tracking,
    backtest_costs,
    gate_thresholds,
)

EPILOG = (
    "Exit status: 0 when the evaluation ran, whether the gate passed or failed (see 'Status:' and "
    "metrics.json gate.passed); 2 on errors."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument("--model", type=Path, required=True, help="model or ensemble artifact directory")
    add_coin(parser, "to evaluate (required for a global model; default: the model's coin)", required=False)
    parser.add_argument(
        "--input",
        type=Path,
        help="score all of this bars file (Parquet, CSV, freqtrade .feather/.json) instead of "
        "the model's stored test split "
        "(refused if it overlaps the model's train/validation period)",
    )
    add_context_input(parser)
    add_gate_and_costs(parser, quorum=False)
    parser.add_argument(
        "--trade-threshold",
        type=float,
        help="backtest tau: long at P(up) >= tau, short at <= 1-tau (default: the selective "
        "threshold chosen on validation, else 0.5)",
    )
    parser.add_argument(
        "--out", type=Path, help="output directory (default: reports/evaluate/<coin>-<model>-<timestamp>)"
    )
    add_tracking(parser)


def run(args: argparse.Namespace) -> int:
    from crpbot.data.cross_asset import parse_context_inputs
    from crpbot.evaluation.evaluate import evaluate_model
    from crpbot.integrations.tracking import open_tracker, record_evaluation

    thresholds, costs = gate_thresholds(args), backtest_costs(args)  # checked before anything loads
    context_inputs = parse_context_inputs(args.context_input)
    tracker = open_tracker(args, "evaluate")
    with tracker.run(f"evaluate {args.model.name}", tags={"crpbot.model": args.model.resolve()}) as run_id:
        result = evaluate_model(
            args.model,
            input_path=args.input,
            context_inputs=context_inputs,
            out_dir=args.out,
            thresholds=thresholds,
            costs=costs,
            trade_threshold=args.trade_threshold,
            coin=args.coin,
        )
        record_evaluation(tracker, run_id, result.out_dir)
    return 0
