"""Study: how many windows does the familiarity check flag per split, and are they harder to call?

Usage: .venv/bin/python studies/familiarity.py [--data-dir DIR]

For each coin of the development data (../shared/data/ohlcv; else the bundled sample), prepared
with the recipe's config (default.yaml: lookback 60, horizon 15): fits the familiarity
(``crpbot.model.familiarity``: Mahalanobis distance of the last scaled feature row, Ledoit-Wolf on
train, threshold at validation's 99%) exactly as an artifact does, then prints the share of
train, validation and test windows flagged unfamiliar, the fit's time, and -- as a stand-in for a
trained model, which this study does not need -- the logistic baseline's test accuracy on familiar
and on unfamiliar windows with 95% CIs (``crpbot.evaluation.metrics.subset_accuracy``). No Ray.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from crpbot.config import CONFIG_DIR, load_config
from crpbot.data.bars import default_input
from crpbot.data.dataset import load_prepared
from crpbot.evaluation.baselines import fit_logistic
from crpbot.evaluation.metrics import subset_accuracy
from crpbot.model.familiarity import Familiarity, fit_familiarity

# the development data beside the checkout (../shared), also from a worktree one level deeper
SHARED = next(
    (
        parent / "shared" / "data" / "ohlcv"
        for parent in Path(__file__).resolve().parents[2:4]
        if (parent / "shared" / "data" / "ohlcv").is_dir()
    ),
    None,
)
COINS = ("BTC", "ETH", "SOL")


def _accuracy_text(reading: dict) -> str:
    if reading["accuracy"] is None:
        return f"n={reading['n']:,}: too few rows for a CI"
    low, high = reading["ci"]
    return f"{reading['accuracy']:.4f} [{low:.4f}, {high:.4f}] (n={reading['n']:,})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=SHARED)
    args = parser.parse_args()
    config = load_config(CONFIG_DIR / "default.yaml")
    for coin in COINS:
        path = args.data_dir / f"{coin}-USD_1m.parquet" if args.data_dir else default_input(coin)
        data = load_prepared(coin, path, config)
        started = time.perf_counter()
        fitted = Familiarity.from_dict(fit_familiarity(data, config.lookback))
        seconds = time.perf_counter() - started
        shares = []
        for split in ("train", "val", "test"):
            ends = data.window_ends(split, config.lookback, labelled=False)
            shares.append(f"{split} {1 - fitted.familiar(data.features[ends]).mean():.2%} of {len(ends):,}")
        print(f"{coin} ({path.name}): unfamiliar {'; '.join(shares)}; fit {seconds:.1f} s")
        rows = data.window_ends("test", config.lookback)
        familiar = fitted.familiar(data.features[rows])
        probs = fit_logistic(data, "train", config.lookback).predict_proba(data.features[rows])[:, 1]
        labels = np.asarray(data.labels[rows])
        for side, kept in (("familiar", familiar), ("unfamiliar", ~familiar)):
            reading = subset_accuracy(labels, probs, kept, horizon=config.horizon)
            print(f"    logistic baseline, test, {side:10s} {_accuracy_text(reading)}")


if __name__ == "__main__":
    main()
