"""GBDT family benchmark: fit time and peak memory of ``model: gbdt`` on a full coin.

Usage: .venv/bin/python benchmarks/bench_gbdt.py [--input FILE] [--threads N]

Reads one full symbol of the development data (../shared/data/ohlcv) when it is there, else the
bundled sample, prepared with the shipped ``tune_configs/gbdt.yaml`` (lookback 60). Times, in this
process, one ``fit_model`` (tabular rows, LightGBM's boosting early-stopped on the train tail,
the validation curve of every round) and the process's peak resident memory during the fit
(VmHWM, reset after the data preparation), beside what the prepared data already held. No Ray: the fit a
Ray task runs is this very call. Issue 19 item 5: the GBDT's fit time and memory on ~290k rows.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from crpbot.config import CONFIG_DIR, load_config
from crpbot.data.bars import default_input
from crpbot.data.dataset import load_prepared
from crpbot.model.family import fit_model

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ohlcv" / "BTC-USD_1m.parquet"


def status_mib(field: str) -> float:
    """A memory line of /proc/self/status (VmRSS: now, VmHWM: the peak since the last reset), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> None:
    """Start VmHWM afresh (Linux >= 4.0), so the fit's peak is not the data preparation's."""
    Path("/proc/self/clear_refs").write_text("5")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=SHARED if SHARED.is_file() else default_input("BTC"))
    parser.add_argument("--threads", type=int, default=1, help="LightGBM threads (num_threads)")
    args = parser.parse_args()

    config = load_config(CONFIG_DIR / "gbdt.yaml").replace(num_threads=args.threads)
    start = time.perf_counter()
    data = load_prepared("BTC", args.input, config)
    prepared = time.perf_counter() - start
    n_train = len(data.window_ends("train", config.lookback))
    n_val = len(data.window_ends("val", config.lookback))
    print(f"{args.input.name}: {n_train:,} train, {n_val:,} val windows, {data.features.shape[1]} features")
    print(f"prepare           {prepared:7.2f} s  peak RSS {status_mib('VmHWM'):,.0f} MiB")
    before = status_mib("VmRSS")
    reset_peak()
    start = time.perf_counter()
    result = fit_model(config, data, log=print)
    fitted = time.perf_counter() - start
    rounds = len(result.history)
    print(
        f"fit ({args.threads} thread{'s' if args.threads > 1 else ''})  {fitted:7.2f} s  "
        f"({rounds} rounds, best {result.best_epoch}; {fitted / rounds:.3f} s per round incl. curves)"
    )
    peak = status_mib("VmHWM")
    print(f"fit's peak RSS    {peak:,.0f} MiB ({peak - before:+,.0f} MiB over {before:,.0f} MiB held before)")


if __name__ == "__main__":
    main()
