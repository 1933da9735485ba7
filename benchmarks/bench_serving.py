"""Serving benchmark: warm in-process ``LiveModel.predict`` latency, and a cold ``crpbot predict``.

Usage: .venv/bin/python benchmarks/bench_serving.py [--input FILE] [--calls N] [--threads T]

The model is the recipe architecture (``TrainConfig()``: 3-layer BiLSTM, hidden 128,
lookback 60) saved as a real artifact with its untrained initial weights and the scaler
fitted on the input's train split: latency does not depend on the weights' values. Warm: one
``LiveModel`` loaded once, then ``--calls`` predictions of the latest bar on CPU, each
including the trailing-slice features, scaling and the forward pass (median and p90 in ms;
goal <= 20 ms). Baseline in the same process: features of the whole file, as evaluation
computes them, against the trailing slice that serving computes. Cold: wall time of the
``crpbot predict`` process (imports, artifact verification, load, bars, prediction).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from crpbot.config import TrainConfig
from crpbot.data.bars import default_input, load_bars
from crpbot.data.dataset import prepare_for_config
from crpbot.data.features import compute_features
from crpbot.model.inference import save_model_artifact
from crpbot.model.network import build_model
from crpbot.model.serving import LiveModel

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ohlcv" / "BTC-USD_1m.parquet"


def timed(work, repeats: int) -> list[float]:
    """Milliseconds of each of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=SHARED if SHARED.is_file() else default_input("BTC"))
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = TrainConfig()
    bars = load_bars(args.input)
    bars.coin = "BTC-USD"
    data = prepare_for_config(bars, config)
    torch.manual_seed(0)
    network = build_model(config, data.features.shape[1])
    with tempfile.TemporaryDirectory() as tmp:
        artifact = save_model_artifact(
            Path(tmp) / "recipe",
            model_state=network.state_dict(),
            config=config,
            data=data,
            history=[],
            best_epoch=0,
            input_path=args.input,
        )
        model = LiveModel.load(artifact)
        print(f"input {args.input} ({len(bars):,} bars); recipe model, torch threads {args.threads}")
        print(f"trailing bars featurised per prediction: {model.bars_needed():,}")

        model.predict(bars, max_staleness=None)  # warm-up: first call pays lazy imports and allocations
        warm = timed(lambda: model.predict(bars, max_staleness=None), args.calls)
        print(f"warm predict (latest bar): median {statistics.median(warm):.2f} ms, p90 {p90(warm):.2f} ms")
        recent = bars.frame.iloc[-1000:]
        raw = timed(lambda: model.predict(recent, max_staleness=None), args.calls)
        print(
            f"warm predict from a raw 1,000-row DataFrame (validation included): "
            f"median {statistics.median(raw):.2f} ms, p90 {p90(raw):.2f} ms"
        )
        tail = bars.tail(model.bars_needed())
        sliced = timed(lambda: compute_features(tail), 20)
        whole = timed(lambda: compute_features(bars), 3)
        scaled = model.scaler.transform(compute_features(tail).to_numpy()[-config.lookback :])
        forward = timed(lambda: model.predictor.proba_at(scaled, [config.lookback - 1]), args.calls)
        print(f"of which the forward pass alone: median {statistics.median(forward):.2f} ms")
        print(
            f"features: trailing slice {statistics.median(sliced):.2f} ms vs whole file "
            f"{min(whole):.1f} ms ({min(whole) / statistics.median(sliced):.0f}x)"
        )

        command = [
            sys.executable, "-m", "crpbot", "predict", "--coin", "BTC", "--input", str(args.input),
            "--model", str(artifact), "--allow-stale", "--json",
        ]  # fmt: skip
        cold = []
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            cold.append(time.perf_counter() - start)
        print(f"cold crpbot predict process: median {statistics.median(cold):.2f} s (of {cold[0]:.2f}, "
              f"{cold[1]:.2f}, {cold[2]:.2f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
