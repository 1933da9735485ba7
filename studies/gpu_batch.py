"""Is the GPU budget's larger batch worse than the recipe's batch 32? Validation loss over seeds, on CPU.

Usage: .venv/bin/python studies/gpu_batch.py [--seeds 0 1 2] [--epochs 4] \\
           [--pairs 32:0.001 512:0.004] [--input data/sample/BTC-USD_1m.parquet] [--processes 2]

The recipe network (tune_configs/default.yaml: BiLSTM 3 x 128) trains with ``fit`` under each
(batch, learning rate) pair and each seed, on the same data, for the same number of epochs; the
number compared is each run's best **validation** loss (the test split is never read). A GPU
budget's pair "is not worse beyond seed noise" when its mean best val loss exceeds batch 32's by
less than two standard errors of the difference. No Ray: one process per run, one torch thread
each, ``--processes`` at a time. Slow on CPU (minutes per run): run it when the host is quiet.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one_run(batch: int, lr: float, seed: int, epochs: int, input_path: str) -> dict:
    import torch

    from crpbot.config import CONFIG_DIR, load_config
    from crpbot.data.dataset import load_prepared
    from crpbot.model.fit import fit

    torch.set_num_threads(1)
    config = load_config(CONFIG_DIR / "default.yaml").replace(
        batch_size=batch, lr=lr, seed=seed, max_epochs=epochs, patience=epochs
    )
    data = load_prepared("BTC", input_path, config)
    started = time.perf_counter()
    history = fit(config, data, log=lambda _: None).history
    best = min(history, key=lambda row: row["val_loss"])
    return {
        "batch": batch,
        "lr": lr,
        "seed": seed,
        "best_val_loss": best["val_loss"],
        "best_epoch": best["epoch"],
        "val_acc": best["val_acc"],
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--pairs", nargs="+", default=["32:0.001", "512:0.004"], help="batch:lr pairs")
    parser.add_argument("--input", default=str(REPO / "data" / "sample" / "BTC-USD_1m.parquet"))
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    pairs = [(int(b), float(lr)) for b, lr in (pair.split(":") for pair in args.pairs)]

    started = time.perf_counter()
    with ProcessPoolExecutor(args.processes) as pool:
        futures = [
            pool.submit(one_run, batch, lr, seed, args.epochs, args.input)
            for batch, lr in pairs
            for seed in args.seeds
        ]
        runs = [future.result() for future in futures]
    print(f"{len(runs)} runs of {args.epochs} epochs in {time.perf_counter() - started:.0f} s ({args.input})")
    print("batch  lr       seed  best val loss  best epoch  val acc  seconds")
    for run in runs:
        print(
            f"{run['batch']:>5}  {run['lr']:<7g}  {run['seed']:>4}  {run['best_val_loss']:.5f}"
            f"  {run['best_epoch']:>10}  {run['val_acc']:.4f}  {run['seconds']:>7.0f}"
        )
    losses = {pair: [r["best_val_loss"] for r in runs if (r["batch"], r["lr"]) == pair] for pair in pairs}
    reference = losses[pairs[0]]
    for pair in pairs:
        values = losses[pair]
        line = f"batch {pair[0]} lr {pair[1]:g}: mean {statistics.mean(values):.5f}"
        if len(values) > 1:
            line += f" sd {statistics.stdev(values):.5f}"
        if pair != pairs[0] and len(values) > 1 and len(reference) > 1:
            diff = statistics.mean(values) - statistics.mean(reference)
            se = (
                statistics.variance(values) / len(values) + statistics.variance(reference) / len(reference)
            ) ** 0.5
            verdict = "not worse beyond seed noise" if diff < 2 * se else "WORSE beyond seed noise"
            line += f"; minus batch {pairs[0][0]}: {diff:+.5f} (2 SE {2 * se:.5f}) -> {verdict}"
        print(line)


if __name__ == "__main__":
    main()
