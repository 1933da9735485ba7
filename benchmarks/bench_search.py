"""Exhaustive grid vs. Optuna TPE + ASHA on a 12-configuration space, plus per-trial overhead.

Usage: flock /tmp/crpbot-ray.lock .venv/bin/python benchmarks/bench_search.py \\
           [--coin BTC] [--input FILE] [--epochs 6] [--samples 6] [--windows 2048]

Both searches run in this process on one local Ray instance, the same data and the same trial
function (``crpbot.search.tune``): the grid trains all 12 configurations (cell x hidden size x lr) to
the full epoch budget; the search samples ``--samples`` of them with seeded TPE and lets ASHA
(grace 1 epoch, reduction factor 3) stop the trailing ones. Printed: best val loss of each, the
spread of val loss across the grid (a 1% target means little if the whole grid is within 1%),
the ratio of training epochs spent, and the per-trial overhead -- trial wall time minus time
inside training epochs, both as measured inside the trial and all-in (search wall time x
concurrency minus training time, per trial: it adds scheduling, actor start and idle slots).
Targets: search best within 1% of the grid's best at <= 40% of its epochs; overhead <= 3 s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml

from crpbot.ray_runtime import init_ray
from crpbot.search.space import load_search_space
from crpbot.search.tune import run_search

REPO = Path(__file__).resolve().parents[1]
SPACE = {
    "cell": {"choice": ["lstm", "gru"]},
    "hidden_size": {"choice": [8, 32]},
    "lr": {"choice": [0.001, 0.003, 0.01]},
}


def write_space(directory: Path, name: str, args: argparse.Namespace, num_samples: int) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "base": str(REPO / "tune_configs" / "smoke.yaml"),
                "seed": 0,
                "space": SPACE,
                # patience above the budget: the epoch ratio then measures ASHA, not early stopping
                "overrides": {"max_train_windows": args.windows, "patience": args.epochs + 1},
                "budget": {
                    "num_samples": num_samples,
                    "max_epochs": args.epochs,
                    "grace_period": 1,
                    "reduction_factor": 3,
                },
            }
        )
    )
    return path


def timed_search(space_path: Path, storage: Path, name: str, args: argparse.Namespace, exhaustive: bool):
    started = time.perf_counter()
    result = run_search(
        load_search_space(space_path),
        args.coin,
        input_path=args.input,
        storage=storage,
        name=name,
        exhaustive=exhaustive,
        progress=False,
        log=lambda _: None,
    )
    return result, time.perf_counter() - started


def describe(label: str, result, wall: float, concurrency: int) -> dict[str, float]:
    table = result.table
    all_in = (wall * concurrency - table["train_seconds"].sum()) / len(table)
    print(
        f"{label:>12}: {len(table):2d} trials, {int(table['epochs_run'].sum()):3d} epochs, "
        f"best val loss {table['best_val_loss'].min():.5f}, wall {wall:6.1f} s; overhead per trial: "
        f"median {table['overhead_seconds'].median():.2f} s, max {table['overhead_seconds'].max():.2f} s "
        f"(in trial), {all_in:.2f} s all-in"
    )
    return {"best": float(table["best_val_loss"].min()), "epochs": float(table["epochs_run"].sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coin", default="BTC")
    parser.add_argument("--input", type=Path, help="OHLCV Parquet (default: bundled sample)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--windows", type=int, default=2048, help="training windows per epoch")
    args = parser.parse_args()

    init_ray(None, num_cpus=2)
    import ray

    concurrency = int(ray.cluster_resources()["CPU"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        grid, grid_wall = timed_search(write_space(tmp_path, "grid", args, 12), tmp_path, "grid", args, True)
        search, search_wall = timed_search(
            write_space(tmp_path, "tpe", args, args.samples), tmp_path, "tpe", args, False
        )
    print(
        f"space: 12 configurations x {args.epochs} epochs, {args.windows} train windows/epoch, "
        f"{args.coin} {args.input or 'bundled sample'}, {concurrency} trials at a time"
    )
    g = describe("grid", grid, grid_wall, concurrency)
    s = describe("TPE + ASHA", search, search_wall, concurrency)
    spread = grid.table["best_val_loss"]
    print(
        f"grid val loss spread: min {spread.min():.5f}, median {spread.median():.5f}, "
        f"max {spread.max():.5f} "
        f"({(spread.max() / spread.min() - 1) * 100:.2f}% max over min)"
    )
    print(f"search best vs grid best: {(s['best'] / g['best'] - 1) * 100:+.2f}% (target within 1%)")
    print(f"epochs spent: {s['epochs'] / g['epochs']:.2f}x of the grid's (target <= 0.40)")
    print(f"wall time: {search_wall / grid_wall:.2f}x of the grid's")
    print("grid table (best first):")
    columns = ["cell", "hidden_size", "lr", "best_val_loss", "val_acc", "epochs_run"]
    print(grid.table[columns].to_string(index=False))
    print("search table (best first):")
    print(search.table[[*columns, "status"]].to_string(index=False))


if __name__ == "__main__":
    main()
