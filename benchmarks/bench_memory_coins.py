"""Memory of a global model's data: N coins built once, shared zero-copy by every Ray worker.

Usage: .venv/bin/python benchmarks/bench_memory_coins.py [--data-dir DIR] [--coins BTC ETH SOL]
       [--workers 2] [--ray-lock /tmp/crpbot-ray.lock]

The build runs without Ray; the Ray part holds ``--ray-lock`` (flock, as ``flock(1)`` takes it on a
shared host where one Ray instance runs at a time).

Three measurements, each against a baseline in this process:

1. Build (driver): the peak of numpy/Python allocations (tracemalloc) while ``prepare_coins``
   builds the shared arrays, against the naive build (prepare every coin, keep them all, then
   ``np.concatenate``). Both divided by the final arrays' size.
2. Sharing (workers): ``--workers`` Ray actors each ``ray.get`` the object once and read every
   byte of the features; the growth of their private memory (``RssAnon`` in /proc) is compared
   with the same actors making a private copy (what a pickled, per-worker copy would cost).
3. Projection: the arrays' bytes per row times 50 pairs x 4 years of 1-minute bars, plus the
   build's working set of one coin (measured here), and per worker ~0 beyond the mapping.

Defaults: the full development data (../shared/data/ohlcv) when present, else the samples;
the recipe's lookback 60 / horizon 15.
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import time
import tracemalloc
from pathlib import Path

import numpy as np

from crpbot.config import TrainConfig
from crpbot.data.bars import load_bars
from crpbot.data.dataset import prepare_for_config
from crpbot.data.multicoin import MultiCoinData, coin_inputs, prepare_coins

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ohlcv"
MINUTES_PER_YEAR = 525_960
ARRAYS = ("features", "labels", "forward_returns", "timestamps", "segment_ids", "coin_ids")


def array_bytes(data: MultiCoinData) -> int:
    return sum(getattr(data, name).nbytes for name in ARRAYS)


def traced_peak(build):
    """(result, peak bytes allocated above the start) of ``build()``, by tracemalloc."""
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    start = tracemalloc.get_traced_memory()[0]
    result = build()
    peak = tracemalloc.get_traced_memory()[1] - start
    tracemalloc.stop()
    return result, peak


def naive_build(config: TrainConfig, inputs: dict[str, Path], cuts: dict) -> np.ndarray:
    """Every coin prepared and held at once, then concatenated: the baseline for the build's peak."""
    parts = []
    for coin, path in inputs.items():
        bars = load_bars(path)
        bars.coin = coin
        parts.append(prepare_for_config(bars, config, split_times=cuts))
    return np.concatenate([part.features for part in parts])


def rss_anon_kib() -> int:
    """This process's private anonymous memory (a copy of an array lands here; a mapping does not)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=SHARED if SHARED.is_dir() else None)
    parser.add_argument("--coins", nargs="+", default=["BTC", "ETH", "SOL"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=50, help="projection: number of pairs")
    parser.add_argument("--years", type=float, default=4.0, help="projection: years of 1-minute bars")
    parser.add_argument("--ray-lock", type=Path, default=Path("/tmp/crpbot-ray.lock"))
    args = parser.parse_args()
    config = TrainConfig(coins=list(args.coins))
    inputs = coin_inputs(config.coins, args.data_dir)

    started = time.perf_counter()
    data, shared_peak = traced_peak(lambda: prepare_coins(config, inputs))
    build_s = time.perf_counter() - started
    final = array_bytes(data)
    rows = len(data)
    _, naive_peak = traced_peak(lambda: naive_build(config, inputs, data.split_times()))
    print(f"input: {args.data_dir or 'bundled samples'}; coins {', '.join(data.coins)}; {rows:,} rows")
    print(f"shared arrays: {final / 2**20:,.1f} MiB ({final / rows:.0f} bytes/row); build {build_s:.1f} s")
    print(
        f"build peak (tracemalloc): prepare_coins {shared_peak / 2**20:,.1f} MiB = "
        f"{shared_peak / final:.2f}x the arrays; naive (all coins held, then concatenate) "
        f"{naive_peak / 2**20:,.1f} MiB = {naive_peak / final:.2f}x; ratio {naive_peak / shared_peak:.2f}x"
    )
    one_coin_working_set = shared_peak - final

    with args.ray_lock.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        shared_kib, copied_kib = measure_workers(data, args.workers, final)
    features_mib = data.features.nbytes / 2**20
    print(
        f"per worker private growth after ray.get + reading all features ({features_mib:,.1f} MiB): "
        f"zero-copy {', '.join(f'{kib / 1024:.1f}' for kib in shared_kib)} MiB; "
        f"private copy {', '.join(f'{kib / 1024:.1f}' for kib in copied_kib)} MiB"
    )

    projected_rows = args.pairs * args.years * MINUTES_PER_YEAR
    projected = projected_rows * final / rows
    per_coin_rows = rows / len(data.coins)
    working = one_coin_working_set * (args.years * MINUTES_PER_YEAR) / per_coin_rows
    print(
        f"projection, {args.pairs} pairs x {args.years:g} years ({projected_rows / 1e6:,.0f}M rows): "
        f"object store {projected / 2**30:,.1f} GiB once per node; driver build peak "
        f"{(projected + working) / 2**30:,.1f} GiB (arrays + one pair's working set "
        f"{working / 2**30:,.2f} GiB; the naive build: ~{(2 * projected + working) / 2**30:,.1f} GiB); "
        "per worker ~0 beyond the mapping"
    )


def measure_workers(data: MultiCoinData, workers: int, final: int) -> tuple[list[int], list[int]]:
    """Private-memory growth (KiB) of each actor: reading the shared object, then a private copy."""
    import ray

    from crpbot.ray_runtime import init_ray

    init_ray(None, num_cpus=2, object_store_memory=max(2 * final, 1 << 30))

    @ray.remote(num_cpus=0)
    class Reader:
        def measure(self, holder: list, copy: bool) -> int:
            gc.collect()
            before = rss_anon_kib()
            loaded = ray.get(holder[0])
            features = np.array(loaded.features) if copy else loaded.features
            float(features.sum(dtype=np.float64))  # touch every page
            grown = rss_anon_kib() - before
            del loaded, features
            return grown

    ref = ray.put(data)
    readers = [Reader.remote() for _ in range(workers)]
    ray.get([reader.measure.remote([ref], False) for reader in readers])  # imports, first mapping
    shared_kib = ray.get([reader.measure.remote([ref], False) for reader in readers])
    copied_kib = ray.get([reader.measure.remote([ref], True) for reader in readers])
    ray.shutdown()
    return shared_kib, copied_kib


if __name__ == "__main__":
    main()
