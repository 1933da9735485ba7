"""Data-path benchmark: feature build rate, and training windows/s vs. the classic Dataset path.

Usage: .venv/bin/python benchmarks/bench_data.py [--input FILE] [--batches N] [--device cuda]

Reads one full symbol of the development data (../shared/data/ohlcv) when it is there,
else the bundled sample. Both window paths are timed in this process, on the same
prepared array and the same train window ends (shuffled), and printed as a ratio
(target: >= 30x; feature build >= 1M rows/s). With ``--device cuda`` both paths deliver
batches on the GPU, as training consumes them: the fast path gathers from a feature array
resident there, the classic path copies each collated CPU batch to the device.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from crpbot.data.bars import default_input, load_bars
from crpbot.data.dataset import prepare_data
from crpbot.data.features import compute_features
from crpbot.data.windows import gather_windows

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ohlcv" / "BTC-USD_1m.parquet"
LOOKBACK, HORIZON, BATCH, CLASSIC_BATCH = 60, 15, 512, 32


class ClassicWindows(Dataset):
    """The usual baseline: one numpy slice per sample, a dict of tensors, collated by the DataLoader."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, ends: np.ndarray) -> None:
        self.features, self.labels, self.ends = features, labels, ends

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        end = self.ends[index]
        return {
            "x": torch.tensor(self.features[end - LOOKBACK + 1 : end + 1]),
            "y": torch.tensor(self.labels[end]),
        }


def best_of(repeats: int, work) -> float:
    """Fastest of a few runs: the machine is shared, the minimum is the least disturbed."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=SHARED if SHARED.is_file() else default_input("BTC"))
    parser.add_argument("--batches", type=int, default=200, help="batches of 512 for the fast path")
    parser.add_argument("--device", default="cpu", help="where batches are delivered (cpu, cuda)")
    args = parser.parse_args()
    device = torch.device(args.device)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    # one intra-op thread: on a shared 2-core host, spinning OpenMP threads make timings meaningless
    torch.set_num_threads(1)

    load_s = best_of(3, lambda: load_bars(args.input))
    bars = load_bars(args.input)
    feature_s = best_of(3, lambda: compute_features(bars))
    print(f"input: {args.input} ({len(bars):,} rows, {bars.segment_ids.max() + 1} segments)")
    print(f"load_bars: {len(bars) / load_s / 1e6:.2f}M rows/s ({load_s:.3f} s)")
    print(
        f"compute_features: {len(bars) / feature_s / 1e6:.2f}M rows/s ({feature_s:.3f} s), "
        f"target >= 1M rows/s"
    )

    data = prepare_data(bars, lookback=LOOKBACK, horizon=HORIZON)
    ends = np.random.default_rng(0).permutation(data.window_ends("train", LOOKBACK))
    features, labels = torch.from_numpy(data.features).to(device), torch.from_numpy(data.labels).to(device)
    fast_windows = min(args.batches * BATCH, len(ends))
    fast_ends = torch.from_numpy(ends[:fast_windows]).to(device)

    def fast_epoch() -> None:
        for start in range(0, fast_windows, BATCH):
            batch_ends = fast_ends[start : start + BATCH]
            x, y = gather_windows(features, batch_ends, LOOKBACK), labels[batch_ends]
            assert x.shape[0] == y.shape[0]
        synchronize()

    classic_windows = min(fast_windows, 20_000)
    loader = DataLoader(
        ClassicWindows(data.features, data.labels, ends[:classic_windows]),
        batch_size=CLASSIC_BATCH,
        shuffle=True,
        num_workers=0,
    )

    def classic_epoch() -> None:
        for batch in loader:
            x, y = batch["x"].to(device), batch["y"].to(device)
            assert x.shape[0] == y.shape[0]
        synchronize()

    fast_rate = fast_windows / best_of(3, fast_epoch)
    classic_rate = classic_windows / best_of(3, classic_epoch)
    print(f"device: {device}")
    print(f"windows/s, gather_windows batch {BATCH}: {fast_rate:,.0f} ({fast_windows:,} windows)")
    print(
        f"windows/s, Dataset+DataLoader batch {CLASSIC_BATCH}: {classic_rate:,.0f} "
        f"({classic_windows:,} windows)"
    )
    print(f"ratio: {fast_rate / classic_rate:.1f}x (target >= 30x)")


if __name__ == "__main__":
    main()
