"""Does BTC's context help ETH and SOL? Walk-forward, same folds, per-coin vs per-coin + BTC context.

Usage: flock /tmp/crpbot-ray.lock .venv/bin/python studies/btc_context.py \\
           [--coins ETH SOL] [--input-dir /work/shared/data/ohlcv] [--folds 4] [--train-days 30] \\
           [--val-days 7] [--test-days 7] [--epochs 5] [--windows 8192] [--out DIR]

Each contender is ``run_walkforward`` with the same small model (tune_configs/smoke.yaml: a
1-layer BiLSTM, hidden 16, lookback 60; ``--epochs`` epochs of ``--windows`` training windows)
on the same folds (planned on the minutes the coins share; where BTC has every minute the target
has, these are the target's own folds, so both contenders share cut times); the
context contender adds BTC's 39 features (``context_coins: [BTC]``). Per coin and contender it
prints the pooled walk-forward test accuracy with its CI (``metrics.mean_interval``) and the edge over each
fold's best baseline (chosen on that fold's validation split) with its paired CI, and per coin
the paired difference context minus per-coin on the test rows both scored. Nothing is chosen on
test: every contender is reported.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
CONTENDERS = {"per-coin": [], "per-coin + BTC context": ["BTC"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coins", nargs="+", default=["ETH", "SOL"])
    parser.add_argument("--input-dir", type=Path, default=Path("/work/shared/data/ohlcv"))
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--train-days", type=float, default=30.0)
    parser.add_argument("--val-days", type=float, default=7.0)
    parser.add_argument("--test-days", type=float, default=7.0)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--windows", type=int, default=8192, help="training windows per epoch")
    parser.add_argument("--out", type=Path, help="where the runs are written (default: a temp dir)")
    args = parser.parse_args()

    from crpbot.config import CONFIG_DIR, load_config
    from crpbot.data.folds import FoldSpec
    from crpbot.evaluation.metrics import paired_interval, predicted_up
    from crpbot.experiments.walkforward import run_walkforward

    config = load_config(CONFIG_DIR / "smoke.yaml").replace(
        max_epochs=args.epochs, patience=args.epochs, max_train_windows=args.windows
    )
    spec = FoldSpec(
        train_days=args.train_days, val_days=args.val_days, test_days=args.test_days, folds=args.folds
    )
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-edge-"))
    print(
        f"machine: {platform.node()}, {platform.processor() or platform.machine()}; model: smoke.yaml "
        f"(1-layer BiLSTM, hidden 16, lookback {config.lookback}), {args.epochs} epochs of {args.windows} "
        f"windows; {args.folds} rolling folds of train/val/test {args.train_days:g}/{args.val_days:g}/"
        f"{args.test_days:g} days; data {args.input_dir}"
    )
    print("coin  contender               n        accuracy [95% CI]          edge vs best baseline [95% CI]")
    for coin in args.coins:
        pooled = {}
        for name, context in CONTENDERS.items():
            started = time.perf_counter()
            run_dir = out / coin / name.replace(" ", "").replace("+", "_")
            result = run_walkforward(
                config.replace(context_coins=context),
                coin,
                spec,
                input_path=args.input_dir / f"{coin}-USD_1m.parquet",
                out_dir=run_dir,
                log=lambda _: None,
            )
            summary = result.summary
            acc, edge = summary["pooled"], summary["pooled_edge"]
            edge_text = (
                f"{edge['edge']:+.4f} [{edge['ci_low']:+.4f}, {edge['ci_high']:+.4f}]"
                if edge.get("edge") is not None
                else "n/a (no baseline_up)"
            )
            print(
                f"{coin:<5} {name:<23} {acc['n']:<8,} {acc['accuracy']:.4f} "
                f"[{acc['accuracy_ci'][0]:.4f}, {acc['accuracy_ci'][1]:.4f}]   {edge_text}   "
                f"({summary['folds_finished']}/{summary['folds_planned']} folds, "
                f"{time.perf_counter() - started:.0f} s)",
                flush=True,
            )
            frames = [
                pd.read_parquet(run_dir / "folds" / str(fold) / "evaluation" / "predictions.parquet")
                for fold in result.folds.loc[result.folds["status"] == "ok", "fold"]
            ]
            pooled[name] = pd.concat(frames, ignore_index=True).set_index("timestamp")
        alone, with_btc = pooled.values()
        both = alone.index.intersection(with_btc.index)
        labels = alone.loc[both, "label"].to_numpy()
        correct = {
            key: (predicted_up(frame.loc[both, "prob_up"].to_numpy()) == (labels == 1)).astype(np.float64)
            for key, frame in pooled.items()
        }
        a, b = correct["per-coin + BTC context"], correct["per-coin"]
        paired = paired_interval(a, b, horizon=config.horizon)
        print(
            f"{coin:<5} context - per-coin on the {len(both):,} rows both scored: "
            f"{a.mean() - b.mean():+.4f} [{paired.low:+.4f}, {paired.high:+.4f}]",
            flush=True,
        )


if __name__ == "__main__":
    main()
