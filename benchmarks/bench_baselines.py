"""Baselines benchmark: the cost of the GBDT baseline on a full coin, against the logistic one.

Usage: .venv/bin/python benchmarks/bench_baselines.py [--input FILE] [--repeats N]

Reads one full symbol of the development data (../shared/data/ohlcv) when it is there, else the
bundled sample, prepared with the recipe's config (lookback 60). Times, in this process and on
the same prepared data: the logistic fit (train, capped at 100k rows), the GBDT fit (all train
windows, early stopping on the latest 15% of them, one thread) and the whole of
``score_baselines`` (both fits, the choice on validation, every baseline on the test windows).
Goal (issue 12): the GBDT costs seconds on ~300k train rows on 2 CPUs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from crpbot.config import CONFIG_DIR, load_config
from crpbot.data.bars import default_input
from crpbot.data.dataset import load_prepared
from crpbot.evaluation.baselines import fit_gbdt, fit_logistic, score_baselines

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ohlcv" / "BTC-USD_1m.parquet"


def best_of(repeats: int, work) -> tuple[float, object]:
    """Fastest of a few runs (the machine is shared, the minimum is the least disturbed), and a result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=SHARED if SHARED.is_file() else default_input("BTC"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    config = load_config(CONFIG_DIR / "default.yaml")
    data = load_prepared("BTC", args.input, config)
    lookback = config.lookback
    n_train = len(data.window_ends("train", lookback))
    n_val = len(data.window_ends("val", lookback))
    rows = data.window_ends("test", lookback)
    print(f"{args.input.name}: {n_train:,} train, {n_val:,} val, {len(rows):,} test windows")

    logistic_s, _ = best_of(args.repeats, lambda: fit_logistic(data, "train", lookback))
    gbdt_s, model = best_of(args.repeats, lambda: fit_gbdt(data, lookback))
    total_s, scores = best_of(
        args.repeats, lambda: score_baselines(data, rows, lookback=lookback, train_data=data)
    )
    print(f"logistic fit      {logistic_s:7.2f} s")
    ratio = gbdt_s / logistic_s
    print(f"gbdt fit          {gbdt_s:7.2f} s  ({model.n_iter_} iterations; {ratio:.1f}x logistic)")
    print(f"score_baselines   {total_s:7.2f} s  (both fits + validation choice + test predictions)")
    print("test accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.accuracies.items()))
    print(f"best on validation: {scores.best}")


if __name__ == "__main__":
    main()
